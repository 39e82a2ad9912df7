"""``pdd-ray`` command line: thin argument parsing over the jobs in ``pdd_ray.jobs``.

Flags such as ``--ipc 10`` are shorthands for ``key=value`` overrides
(``selection.ipc=10``); any config key can be overridden that way. User
mistakes end in one ``error:`` line and exit status 2, before compute starts.
"""

from __future__ import annotations

import argparse
import json
import sys

from pdd_ray.errors import UserError

# flag -> dotted config key, per command
BASELINE_FLAGS = {"dataset": "data.dataset", "data_root": "data.root", "method": "selection.method",
                  "ipc": "selection.ipc", "out": "out", "device": "device", "seed": "seed"}
EVALUATE_FLAGS = {"arch": "model.arch", "mode": "eval.mode", "runs": "eval.runs", "epochs": "eval.epochs",
                  "data_root": "data_root", "device": "device"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="pdd-ray", description="Progressive Dataset Distillation on Ray.",
                                     epilog="Any config key can be overridden as key=value, e.g. eval.runs=3.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("baseline", help="select a coreset of real images, save it as a synthetic set, evaluate it")
    p.add_argument("--config", help="YAML config (BaselineConfig)")
    for flag in BASELINE_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)

    p = sub.add_parser("evaluate", help="train fresh networks on a synthetic set and report test accuracy")
    p.add_argument("directory")
    p.add_argument("--config", help="YAML config (EvaluateConfig)")
    for flag in EVALUATE_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag)

    p = sub.add_parser("export", help="export a synthetic set for other tools")
    p.add_argument("directory")
    p.add_argument("--to", choices=["parquet"], default="parquet")
    p.add_argument("--out", help="output file (default DIR/synthetic.parquet)")

    p = sub.add_parser("data", help="inspect or verify a dataset on disk")
    p.add_argument("action", choices=["info", "verify"])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-root", dest="data_root")
    return parser


def _overrides(args, flags: dict[str, str]) -> list[str]:
    # Flags go first so explicit key=value overrides win over them.
    from_flags = [f"{key}={getattr(args, flag)}" for flag, key in flags.items() if getattr(args, flag) is not None]
    return from_flags + list(args.overrides)


def cmd_baseline(args) -> int:
    from pdd_ray.config import BaselineConfig, load_config
    config = load_config(BaselineConfig, args.config, _overrides(args, BASELINE_FLAGS))
    from pdd_ray.jobs.baseline import run_baseline
    summary = run_baseline(config)
    print(f"wrote {summary['count']} images ({summary['method']}, ipc {summary['ipc']}) to {summary['out']}")
    if "eval" in summary:
        print_eval_table({f"{config.model.arch}/{config.eval.mode}": summary["eval"]})
    return 0


def cmd_evaluate(args) -> int:
    from pdd_ray.config import load_config
    from pdd_ray.jobs.evaluate import EvaluateConfig, evaluate_directory
    from pdd_ray.synset import read_manifest
    read_manifest(args.directory)  # fail on a wrong directory before parsing anything expensive
    config = load_config(EvaluateConfig, args.config, _overrides(args, EVALUATE_FLAGS))
    entry = evaluate_directory(args.directory, config)
    print_eval_table({f"{config.model.arch}/{config.eval.mode}": entry})
    print(f"results in {args.directory}/eval.json")
    return 0


def print_eval_table(entries: dict[str, dict]) -> None:
    """A small fixed-width table: arch/mode, accuracy per phase, final mean ± std."""
    print(f"{'arch/mode':<24} {'runs':>4} {'per stage (mean %)':<28} {'final %':>14}")
    for key, entry in entries.items():
        r = entry["result"]
        stages = " ".join(f"{100 * a:.1f}" for a in r["per_phase_mean"])
        print(f"{key:<24} {r['runs']:>4} {stages:<28} {100 * r['mean']:>7.2f} ± {100 * r['std']:.2f}")


def cmd_export(args) -> int:
    from pdd_ray.export import export_parquet
    print(f"wrote {export_parquet(args.directory, args.out)}")
    return 0


def cmd_data(args) -> int:
    from pdd_ray.data.registry import dataset_info, verify
    if args.action == "info":
        print(json.dumps(dataset_info(args.dataset, args.data_root), indent=2, default=str))
        return 0
    problems = verify(args.dataset, args.data_root)
    for problem in problems:
        print(f"problem: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s) found")
    return 0 if not problems else 1


COMMANDS = {"baseline": cmd_baseline, "evaluate": cmd_evaluate, "export": cmd_export, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pdd-ray`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may sit anywhere on the line; anything else unknown is a typo.
    args.overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in args.overrides or args.command not in ("baseline", "evaluate")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"pdd-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
