"""``pdd-ray`` command line: thin argument parsing over the jobs in ``pdd_ray.jobs``.

Flags such as ``--ipc 10`` are shorthands for ``key=value`` overrides
(``selection.ipc=10``); any config key can be overridden that way. User
mistakes end in one ``error:`` line and exit status 2, before compute starts.
The long training commands (``run``, ``distill``, ``experts``) need ``--config``:
a recipe, or ``default`` for the built-in (full-size, hours-long) defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from functools import partial
from pathlib import Path
from typing import Callable

from pdd_ray import __version__
from pdd_ray.errors import UserError
from pdd_ray.progress import LOG_LEVELS, configure_output

# flag -> dotted config key, per command
BASELINE_FLAGS = {"dataset": "data.dataset", "data_root": "data.root", "method": "selection.method",
                  "ipc": "selection.ipc", "out": "out", "device": "device", "seed": "seed"}
EVALUATE_FLAGS = {"arch": "model.arch", "mode": "eval.mode", "runs": "eval.runs", "epochs": "eval.epochs",
                  "data_root": "data_root", "device": "device"}

EXPERTS_FLAGS = {"out": "out", "num_experts": "num_experts", "epochs": "recipe.epochs", "address": "address",
                 "dataset": "data.dataset", "data_root": "data.root", "device": "device"}

RUN_FLAGS = {"out": "out", "method": "method", "address": "address", "buffer": "buffer", "dataset": "data.dataset",
             "data_root": "data.root", "device": "device", "seed": "seed", "workers": "parallel.workers"}


ON_CLUSTER_HELP = "run the job as one Ray task on this cluster (a GPU if it has one); default: RAY_ADDRESS, else here"

CONFIG_FLAGS = {"baseline": BASELINE_FLAGS, "evaluate": EVALUATE_FLAGS, "experts": EXPERTS_FLAGS, "run": RUN_FLAGS,
                "distill": RUN_FLAGS}

# --config default: the config class's own defaults, asked for by name (a file called "default": ./default).
DEFAULTS = "default"
# What to start from, per long training command, when --config is missing.
RECIPES = {"run": "tune_configs/quickstart_fashion_mnist.yaml", "distill": "tune_configs/quickstart_fashion_mnist.yaml",
           "experts": "tune_configs/experts_fashion_mnist.yaml"}
# The commands whose config `config show` resolves, in the order it tries them when --kind is not given.
CONFIG_KINDS = ("run", "experts", "continual", "sweep", "baseline")


def _registry_names(module: str, name: str) -> Callable[[], list[str]]:
    """The names of registry ``module.name``, looked up when asked (the registries import torch)."""
    def names() -> list[str]:
        return getattr(importlib.import_module(module), name).names()
    return names


def _eval_modes() -> list[str]:
    from pdd_ray.config import EVAL_MODES
    return list(EVAL_MODES)


# Config key -> its choices, shown in --help as argparse shows `choices`. They are not argparse choices:
# the config check refuses a bad value in one line that lists them, as it does for key=value.
KEY_CHOICES: dict[str, Callable[[], list[str]]] = {
    "data.dataset": _registry_names("pdd_ray.data.registry", "DATASETS"),
    "selection.method": _registry_names("pdd_ray.selection", "SELECTORS"),
    "method": _registry_names("pdd_ray.distill.methods", "METHODS"),
    "model.arch": _registry_names("pdd_ray.models", "MODELS"),
    "eval.mode": _eval_modes,
    "device": lambda: ["auto", "cpu", "cuda", "cuda:N"],
}


class ChoicesFormatter(argparse.HelpFormatter):
    """Shows a flag's ``choice_names`` as ``{a,b,c}`` in usage and help, like argparse's own ``choices``."""

    def _metavar_formatter(self, action, default_metavar):
        names = getattr(action, "choice_names", None)
        if names is None or action.metavar is not None:
            return super()._metavar_formatter(action, default_metavar)
        text = "{" + ",".join(names()) + "}"  # read here, at help time, so parsing never imports torch
        return lambda size: (text,) * size


def _describe_config_flags(command: argparse.ArgumentParser, flags: dict[str, str]) -> None:
    """Help for each shorthand flag: the config key it sets, and that key's choices where it has some."""
    command.formatter_class = ChoicesFormatter
    for action in command._actions:
        key = flags.get(action.dest)
        if key is None or not action.option_strings:
            continue
        action.help = action.help or f"sets {key}"
        if key in KEY_CHOICES:
            action.choice_names = KEY_CHOICES[key]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="pdd-ray", description="Progressive Dataset Distillation on Ray.",
                                     epilog="Any config key can be overridden as key=value, e.g. eval.runs=3.")
    parser.add_argument("--version", action="version", version=f"pdd-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("baseline", help="select a coreset of real images, save it as a synthetic set, evaluate it")
    p.add_argument("--config", help="YAML config (BaselineConfig)")
    p.add_argument("--address", help=ON_CLUSTER_HELP)
    for flag in BASELINE_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)

    p = sub.add_parser("evaluate", help="train fresh networks on a synthetic set and report test accuracy")
    p.add_argument("directory")
    p.add_argument("--config", help="YAML config (EvaluateConfig)")
    p.add_argument("--address", help=ON_CLUSTER_HELP)
    for flag in EVALUATE_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)
    p.add_argument("--figures", nargs="+", metavar="FIGURE",
                   help="extra figures beside the set's accuracy, each under the set's protocol (none by default); "
                        "choices: random-real (random real images, as many per class, same epochs: the improvement "
                        "over them), no-aug (the set with augmentation off), full-real (the whole real training "
                        "split), dd-ranking (random-real and no-aug)")

    p = sub.add_parser("experts", help="train an expert-trajectory buffer with Ray, or inspect one",
                       description="pdd-ray experts --config CFG [key=value ...] --out DIR | pdd-ray experts inspect DIR")
    p.add_argument("words", nargs="*", help="'inspect DIR', and/or key=value overrides")
    p.add_argument("--config", help=f"YAML config (ExpertsConfig), e.g. {RECIPES['experts']}, or 'default'; "
                                    "needed to train")
    for flag in EXPERTS_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)
    p.add_argument("--verify", action="store_true", help="with inspect: check every file's checksum")

    for name, text in (("run", "experts -> stages -> test evaluation -> report (resumes where it stopped)"),
                       ("distill", "the stages only (experts built if missing), no final evaluation")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help=f"YAML config (DistillConfig), e.g. {RECIPES[name]}, or 'default' (the "
                                        "built-in full-size defaults: hours); needed")
        for flag in RUN_FLAGS:
            p.add_argument("--" + flag.replace("_", "-"), dest=flag)

    p = sub.add_parser("continual", help="class-incremental learning with distilled memories (paper Sec. 5.5)",
                       description="pdd-ray continual --config CFG.yaml [key=value ...]; re-run to resume")
    p.add_argument("--config", required=True,
                   help="YAML config (ContinualConfig), e.g. tune_configs/continual_fashion_mnist.yaml")

    p = sub.add_parser("sweep", help="sweep PDD settings with Ray Tune (grid / sampled, ASHA); re-run to resume",
                       description="pdd-ray sweep --config SWEEP.yaml [--address ADDR] [key=value ...] | "
                                   "pdd-ray sweep --report SWEEP_OUT")
    p.add_argument("--config",
                   help="YAML config (SweepConfig), e.g. tune_configs/sweep_stages_x_ipc_fashion_mnist.yaml")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--report", metavar="SWEEP_OUT", help="only rebuild the table, results and heatmap of a sweep dir")

    p = sub.add_parser("export", help="export a synthetic set for other tools")
    p.add_argument("directory")
    p.add_argument("--to", choices=["parquet", "pt", "folder"], default="parquet",
                   help="parquet: a Hugging Face style table (PNG, label, stage, lr, exact values); "
                        "pt: MTT/DATM/DD-Ranking tensor files; folder: ImageFolder class folders of PNGs")
    p.add_argument("--out", help="output file (parquet) or new directory (pt, folder); default inside DIR")
    p.add_argument("--stored", action="store_true",
                   help="write the stored images of a multi-formation set, not the decoded ones it trains on")

    p = sub.add_parser("data", help="inspect or verify a dataset on disk")
    p.add_argument("action", choices=["info", "verify"])
    p.add_argument("--dataset", default="fashion_mnist", help="which dataset (default fashion_mnist)")
    p.add_argument("--data-root", dest="data_root", help="where it is (default: its usual places)")
    _describe_config_flags(p, {"dataset": "data.dataset"})

    p = sub.add_parser("config", help="print a config as the command would run it: presets and key=value applied, "
                                      "validated, as YAML", description="pdd-ray config show CFG [--kind KIND] "
                                                                        "[key=value ...]")
    p.add_argument("action", choices=["show"])
    p.add_argument("path", metavar="CFG", help=f"a YAML config, or '{DEFAULTS}' for the built-in defaults of --kind")
    p.add_argument("--kind", choices=list(CONFIG_KINDS),
                   help="which command's config CFG is (default: the first whose keys it uses, in this order)")

    for name, flags in CONFIG_FLAGS.items():
        _describe_config_flags(sub.choices[name], flags)
    for command in sub.choices.values():  # on every subcommand: pdd-ray run --quiet ...
        command.add_argument("--quiet", action="store_true",
                             help="no progress and no summary lines; warnings and errors only")
        command.add_argument("--log-level", dest="log_level", default="info", choices=LOG_LEVELS,
                             help="summary lines (one per validation check and finished stage) are info; "
                                  "choices: debug, info, warning, error (default info)")
    return parser


def _overrides(args, flags: dict[str, str]) -> list[str]:
    # Flags go first so explicit key=value overrides win over them.
    from_flags = [f"{key}={getattr(args, flag)}" for flag, key in flags.items() if getattr(args, flag) is not None]
    return from_flags + list(args.overrides)


def cmd_baseline(args) -> int:
    from pdd_ray.config import BaselineConfig, load_config
    config = load_config(BaselineConfig, args.config, _overrides(args, BASELINE_FLAGS))
    from pdd_ray.cluster import call_on_cluster
    from pdd_ray.jobs.baseline import run_baseline
    config.out, config.data.root = _absolute(config.out), _absolute(config.data.root)  # the task may run elsewhere
    summary = call_on_cluster(run_baseline, config, address=args.address)
    print(f"wrote {summary['count']} images ({summary['method']}, ipc {summary['ipc']}) to {summary['out']}")
    if "eval" in summary:
        print_eval_table({f"{config.model.arch}/{config.eval.mode}": summary["eval"]})
    return 0


def cmd_evaluate(args) -> int:
    from pdd_ray.jobs.evaluate import evaluate_config, evaluate_directory
    # the run's own recipe from the set's manifest, under --config and key=value (a wrong DIR fails here)
    figures = [f"figures=[{','.join(args.figures)}]"] if args.figures else []  # validated with the config
    config = evaluate_config(args.directory, args.config, figures + _overrides(args, EVALUATE_FLAGS))
    from pdd_ray.cluster import call_on_cluster
    config.data_root = _absolute(config.data_root)  # the task may run on another node, in another directory
    entry = call_on_cluster(evaluate_directory, _absolute(args.directory), config, address=args.address)
    print_eval_table({f"{config.model.arch}/{config.eval.mode}": entry})
    if "figures" in entry:
        from pdd_ray.jobs.evaluate import figures_table
        print("\n".join(figures_table(entry)))
    print(f"results in {args.directory}/eval.json")
    return 0


def _absolute(path: str | None) -> str | None:
    from pathlib import Path

    from pdd_ray.storage import is_uri
    return path if path is None or is_uri(path) else str(Path(path).resolve())


def print_eval_table(entries: dict[str, dict]) -> None:
    """A small fixed-width table: arch/mode, accuracy per phase, final mean ± std."""
    print(f"{'arch/mode':<24} {'runs':>4} {'per stage (mean %)':<28} {'final %':>14}")
    for key, entry in entries.items():
        r = entry["result"]
        stages = " ".join(f"{100 * a:.1f}" for a in r["per_phase_mean"])
        print(f"{key:<24} {r['runs']:>4} {stages:<28} {100 * r['mean']:>7.2f} ± {100 * r['std']:.2f}")


def cmd_experts(args) -> int:
    overrides = [w for w in args.words if "=" in w] + list(args.overrides)
    words = [w for w in args.words if "=" not in w]
    if words[:1] == ["inspect"]:
        if len(words) != 2:
            raise UserError("usage: pdd-ray experts inspect DIR")
        return inspect_experts(words[1], args.verify)
    if words:
        _refuse_unknown_words(words)
        raise UserError(f"unexpected argument '{words[0]}' (did you mean 'inspect DIR' or key=value?)")
    path = _required_config(args)
    from pdd_ray.config import load_config
    from pdd_ray.experts.buffer import ExpertsConfig, build_buffer
    args.overrides = overrides
    config = load_config(ExpertsConfig, path, _overrides(args, EXPERTS_FLAGS))
    summary = build_buffer(config)
    print(f"trained {summary['trained']} expert(s); {summary['complete']} complete in {summary['out']}")
    return inspect_experts(summary["out"], verify=False)


def _required_config(args) -> str | None:
    """The --config of a long training command; None for ``--config default`` (the config's own defaults).

    Without --config these commands would silently start the full-size default job
    (hours); asking costs one line and points at a recipe that finishes in minutes.
    """
    if args.config is None:
        raise UserError(f"--config is needed: start from e.g. --config {RECIPES[args.command]} (more in "
                        f"tune_configs/), or give --config {DEFAULTS} for the built-in full-size defaults (hours)")
    return None if args.config == DEFAULTS else args.config


def inspect_experts(directory: str, verify: bool) -> int:
    """Print one row per expert; with ``verify``, check checksums and fail on problems."""
    from pdd_ray.trajectories import TrajectoryStore
    store = TrajectoryStore.open(directory)
    rows = store.summary_rows()
    print(f"{'expert':>6} {'init':<11} {'snapshots':>9} {'test acc %':>10} {'MiB':>8}")
    for r in rows:
        acc = r.get("test_accuracy")
        print(f"{r['id']:>6} {str(r.get('init', '-')):<11} {r['snapshots']:>9} "
              f"{(100 * acc if acc is not None else float('nan')):>10.2f} {r['bytes'] / 2**20:>8.2f}")
    print(f"{len(rows)} expert(s), dtype {store.dtype}, {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    problems = store.verify() if verify else []
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def cmd_run(args) -> int:
    from pdd_ray.config import load_config
    from pdd_ray.distill.config import DistillConfig
    from pdd_ray.jobs.run import run_pdd
    path = _required_config(args)
    defaults = ["evaluate=false"] if args.command == "distill" else []
    args.overrides = defaults + list(args.overrides)
    config = load_config(DistillConfig, path, _overrides(args, RUN_FLAGS))
    summary = run_pdd(config)
    print(f"{summary['stages']} stage(s) in {summary['synthetic']}")
    diverged = summary.get("diverged")
    if "metrics" in summary:
        m = summary["metrics"]
        pdd, rnd = m["pdd"], m["random_real"]
        print(f"{'method':<28} {'total ipc':>9} {'epochs':>7} {'test accuracy %':>20}")
        print(f"{'PDD (' + config.method + ', ' + pdd['mode'] + ')':<28} {m['total_ipc']:>9} "
              f"{m.get('pdd_epochs', '-'):>7} {100 * pdd['mean']:>12.2f} ± {100 * pdd['std']:.2f}")
        print(f"{'random real images':<28} {m['total_ipc']:>9} {m.get('random_real_epochs', '-'):>7} "
              f"{100 * rnd['mean']:>12.2f} ± {100 * rnd['std']:.2f}")
        print(f"report: {config.out}/report.md")
    if diverged:
        from pdd_ray.distill.divergence import EXIT_DIVERGED
        print(f"pdd-ray {args.command}: diverged: {diverged[0]} (all signs in metrics.json); lower the step sizes "
              "(mtt.lr_img, mtt.lr_teacher, gm.lr_img) and run into a new out=", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def cmd_continual(args) -> int:
    from pdd_ray.config import load_config
    from pdd_ray.continual.config import ContinualConfig
    from pdd_ray.jobs.continual import run_continual
    config = load_config(ContinualConfig, args.config, args.overrides)
    summary = run_continual(config)
    print(f"{'memory':<28} {'average incremental %':>22} {'last phase %':>16}")
    for name, entry in summary["builders"].items():
        average, last = entry["average_incremental"], entry["last"]
        print(f"{name:<28} {100 * average['mean']:>14.2f} ± {100 * average['std']:.2f} "
              f"{100 * last['mean']:>9.2f} ± {100 * last['std']:.2f}")
    print(f"report: {config.out}/report.md")
    return 0


def cmd_sweep(args) -> int:
    """Run (or resume) a sweep, or with ``--report`` rebuild its table and heatmap; 1 if a trial is unfinished."""
    from pdd_ray.sweep import load_sweep_config, report_sweep, run_sweep
    if args.report:
        if args.config or args.overrides:
            raise UserError("--report SWEEP_OUT takes no --config or key=value")
        summary = report_sweep(args.report)
    else:
        config = load_sweep_config(args.config, args.overrides)
        config.address = args.address or config.address
        summary = run_sweep(config)
    print_sweep_summary(summary)
    unfinished = [r for r in summary["rows"] if r.get("status") in ("error", "incomplete")]
    if unfinished and not args.report:
        print(f"{len(unfinished)} trial(s) failed or unfinished: fix the cause, if any, and run the same command "
              "again to resume (finished trials are kept)")
    return 1 if unfinished and not args.report else 0


def print_sweep_summary(summary: dict) -> None:
    """The results table, the best trial by validation accuracy, and where the files are."""
    from pdd_ray.sweep.report import format_table
    rows, best = summary["rows"], summary["best"]
    print(format_table(rows, summary["mode"]) if rows else "no trial has started yet")
    for row in rows:
        if row.get("status") == "error":
            print(f"trial {row['trial']} failed: {row.get('error')}")
    if best is not None:
        test = f", test {100 * best['test_accuracy']:.2f}%" if best.get("test_accuracy") is not None else ""
        print(f"best by validation: {best['trial']} (val {100 * best['val_accuracy']:.2f}%{test})")
    print("results: " + ", ".join(summary["paths"].values()))


def cmd_export(args) -> int:
    from pdd_ray.export import export_set
    print(f"wrote {export_set(args.directory, args.to, args.out, decoded=not args.stored)}")
    return 0


def cmd_data(args) -> int:
    from pdd_ray.data.registry import dataset_info, verify
    if args.action == "info":
        info = dataset_info(args.dataset, args.data_root)
        if info["root"] is None:  # not on disk: the "not found; looked in ...; to get it ..." line
            raise UserError(info["errors"][0])
        print(json.dumps(info, indent=2, default=str))
        return 0
    problems = verify(args.dataset, args.data_root)
    for problem in problems:
        print(f"problem: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s) found")
    return 0 if not problems else 1


def _config_kinds() -> dict[str, tuple[type, Callable]]:
    """Per command: its config class and the loader it runs (imported only when asked)."""
    from pdd_ray.config import BaselineConfig, load_config
    from pdd_ray.continual.config import ContinualConfig
    from pdd_ray.distill.config import DistillConfig
    from pdd_ray.experts.buffer import ExpertsConfig
    from pdd_ray.sweep.config import SweepConfig
    classes = {"run": DistillConfig, "experts": ExpertsConfig, "continual": ContinualConfig, "sweep": SweepConfig,
               "baseline": BaselineConfig}
    return {kind: (cls, _load_sweep_checked if cls is SweepConfig else partial(load_config, cls))
            for kind, cls in classes.items()}


def _load_sweep_checked(path: str | None, overrides: list[str]):
    """A sweep config as ``pdd-ray sweep`` checks it before Ray starts: with every trial's run config."""
    from pdd_ray.sweep import load_sweep_config, make_plan
    config = load_sweep_config(path, overrides)
    make_plan(config)
    return config


def _guess_kind(path: str | None, overrides: list[str], fields: dict[str, set[str]]) -> str:
    """The first kind whose config has every top-level key of CFG and the overrides, else the one sharing most."""
    from pdd_ray.config import parse_override, read_yaml
    keys = set(read_yaml(path)) if path is not None else set()
    keys |= {parse_override(item)[0].split(".")[0] for item in overrides}
    fitting = [kind for kind in CONFIG_KINDS if keys <= fields[kind]]
    # None fits: load it as the closest kind, whose error names the stray key (and what was meant).
    return fitting[0] if fitting else max(CONFIG_KINDS, key=lambda kind: len(keys & fields[kind]))


def cmd_config(args) -> int:
    """``config show``: the resolved config as YAML, loaded exactly as its command would load it."""
    import yaml

    from pdd_ray.config import to_dict
    path = None if args.path == DEFAULTS else args.path
    kinds = _config_kinds()
    fields = {kind: {f.name for f in dataclasses.fields(cls)} for kind, (cls, _) in kinds.items()}
    kind = args.kind or _guess_kind(path, args.overrides, fields)
    cls, load = kinds[kind]
    config = load(path, args.overrides)
    print(f"# pdd-ray config show: {kind} config ({cls.__name__}), from {args.path}")
    print(yaml.safe_dump(_plain(to_dict(config)), sort_keys=False, default_flow_style=False), end="")
    return 0


def _plain(value):
    """Tuples as lists, all the way down: safe YAML has no tuples."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


COMMANDS = {"baseline": cmd_baseline, "continual": cmd_continual, "evaluate": cmd_evaluate, "experts": cmd_experts,
            "run": cmd_run,
            "distill": cmd_run, "sweep": cmd_sweep, "export": cmd_export, "data": cmd_data, "config": cmd_config}


TAKES_OVERRIDES = ("baseline", "continual", "evaluate", "experts", "run", "distill", "sweep", "config")


def _refuse_unknown_words(words: list[str]) -> None:
    """A UserError saying which ``key=value`` was meant, if a word is an override written without '='."""
    from pdd_ray.config import override_hint
    for word, following in zip(words, [*words[1:], None]):
        if following is not None and (following.startswith("-") or "=" in following):
            following = None  # a flag or an override of its own, not this word's value
        meant = override_hint(word, following)
        if meant is not None:
            raise UserError(f"'{word}' is not a key=value override: did you mean {meant}?")


def _refuse_run_directory(args) -> None:
    """A run directory where its synthetic set is meant (evaluate/export RUN_DIR): say RUN_DIR/synthetic."""
    directory = getattr(args, "directory", None)
    if directory is None or (Path(directory) / "manifest.json").exists():
        return
    inner = Path(directory) / "synthetic"
    if not (inner / "manifest.json").is_file():
        return
    from pdd_ray.synset import read_manifest
    try:
        read_manifest(inner)
    except UserError:
        return  # not a synthetic set either: the command's own error says what is wrong
    raise UserError(f"{directory} is a run directory, not a synthetic set: did you mean {inner}?")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pdd-ray`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may sit anywhere on the line; anything else unknown is a typo.
    args.overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in args.overrides or args.command not in TAKES_OVERRIDES]
    from pdd_ray.cluster import command_scope
    from pdd_ray.runtime import tune_malloc
    try:
        if unknown and args.command in TAKES_OVERRIDES:
            _refuse_unknown_words(unknown)  # stages.ipc:2 or stages.ipc 2: say key=value
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        _refuse_run_directory(args)
        configure_output(args.quiet, args.log_level)  # before any compute: a bad PDD_RAY_PROGRESS is one line
        tune_malloc()  # before the first tensor: freed activations are reused, not refaulted (pdd_ray.runtime)
        with command_scope():  # one Ray per command, however many stages ask for it
            return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"pdd-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
