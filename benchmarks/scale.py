"""Large total IPC: what each component of PDD costs against the union size, before and after.

    python benchmarks/scale.py components   # unit costs, memory, fitted exponents, cost model
    python benchmarks/scale.py e2e          # 10 stages x 2 IPC on a fake Tiny-ImageNet, resumed once

Tiny-ImageNet shapes throughout (200 classes, 3x64x64, ConvNet depth 4), at a
narrow width so it runs on this CPU. "before" is the union handling this
release replaced, re-created here for the comparison (every MTT step
concatenating the union, every progressive prefix U_k its own copy, validation
nets retrained through U_1..U_{i-1} at every stage); "after" is the shipped code.
Each measurement interleaves the variants and reports min and median.

The cost model multiplies counted image passes by the measured unit costs for
the Tiny-ImageNet recipe (``tune_configs/pdd_mtt_tiny_imagenet_ipc10.yaml``,
stages of 10 IPC) on one device and on eight, and writes
``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdd_ray.augment.dsa import DSA  # noqa: E402
from pdd_ray.distill import mtt  # noqa: E402
from pdd_ray.distill.base import SyntheticState  # noqa: E402
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher, MTTWorkItem  # noqa: E402
from pdd_ray.distill.validation import ProgressiveValidator, StartCache  # noqa: E402
from pdd_ray.evaluation import EvalProtocol  # noqa: E402
from pdd_ray.models import ParamLayout, create_model  # noqa: E402
from pdd_ray.models.functional import FlatForward, flatten_params  # noqa: E402
from pdd_ray.provenance import now, versions, write_json  # noqa: E402
from pdd_ray.synset import Stage  # noqa: E402
from pdd_ray.train.loop import make_sgd, train_epoch  # noqa: E402
from pdd_ray.trajectories import TrajectoryStore  # noqa: E402

CLASSES, SHAPE, DEPTH = 200, (3, 64, 64), 4
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
IMAGE_BYTES = 4 * math.prod(SHAPE)  # float32


def _model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnet", SHAPE[0], CLASSES, SHAPE[-1], width=width, depth=DEPTH)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.arange(n) % CLASSES


def _timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _interleaved(variants: dict, repeats: int) -> dict:
    """{name: [seconds per repeat]}, the variants taking turns."""
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn))
    return times


def _synced(device: str, fn) -> None:
    """Run ``fn`` and wait for the device, so the time is the work's, not its launch's."""
    fn()
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _summary(seconds: list[float]) -> dict:
    return {"min_s": min(seconds), "median_s": statistics.median(seconds), "repeats": len(seconds)}


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """b of y ~ a * x^b (least squares in log-log)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


# ---------------------------------------------------------------------------- unit costs


def train_pass_cost(width: int, n: int = 2048, repeats: int = 3, device: str = "cpu") -> dict:
    """Seconds per image pass of protocol training (batch 256, DSA), the unit of experts, checks and evaluation."""
    images, labels = (t.to(device) for t in _images(n))
    model = _model(width).to(device)
    optimizer = make_sgd(model, 0.01)
    augment = DSA()
    times = _interleaved({"train": lambda: _synced(device, lambda: train_epoch(
        model, images, labels, optimizer, 256, augment, torch.Generator().manual_seed(0)))}, repeats)["train"]
    return {**_summary(times), "images": n, "per_image_s": min(times) / n}


def _concatenating(frozen, live, index):
    """Before: every step built the union, then indexed it."""
    return torch.cat([frozen, live])[index]


def mtt_step_cost(width: int, unions: list[int], live: int = 2000, syn_steps: int = 4, repeats: int = 3,
                  device: str = "cpu") -> dict:
    """Seconds per student step of one MTT contribution (memory-saving unroll, batch_syn 64) against the union."""
    model = _model(width).to(device)
    layout = ParamLayout.of(model)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        store = TrajectoryStore.create(Path(directory) / "store", dataset="fake", preprocessing={},
                                       model={"arch": "convnet"}, layout=layout, recipe={}, num_snapshots=4)
        start = flatten_params(model)
        store.write_expert(0, torch.stack([start + 0.01 * k for k in range(4)]), {})
        config = MTTConfig(syn_steps=syn_steps, expert_epochs=2, max_start_epoch=1, batch_syn=64, memory_saving=True)
        matcher = MTTMatcher(config, store, FlatForward(model), DSA(), device=device)
        item = MTTWorkItem(0, 0, 1234)
        for union in unions:
            frozen, frozen_labels = (t.to(device) for t in _images(union - live, seed=1))
            images, labels = (t.to(device) for t in _images(live, seed=2))
            state = SyntheticState(frozen, frozen_labels, images.requires_grad_(True), labels,
                                   torch.tensor(0.01).requires_grad_(True))

            def after():
                _synced(device, lambda: matcher.contribution(state, item))

            def before():
                original = mtt.gather_union
                mtt.gather_union = _concatenating
                try:
                    _synced(device, lambda: matcher.contribution(state, item))
                finally:
                    mtt.gather_union = original

            times = _interleaved({"after": after, "before": before}, repeats)
            rows.append({"union": union, **{k: {**_summary(v), "per_step_s": min(v) / syn_steps}
                                            for k, v in times.items()}})
    return {"rows": rows, "syn_steps": syn_steps, "batch_syn": 64,
            "exponent_after": fit_exponent(unions, [r["after"]["per_step_s"] for r in rows]),
            "exponent_before": fit_exponent(unions, [r["before"]["per_step_s"] for r in rows])}


def validation_start_cost(width: int, stage_counts: list[int], ipc: int = 2, repeats: int = 2) -> dict:
    """Seconds to get stage i's validation nets' starts: continuing stage i-1's (after) or retraining (before)."""
    protocol = EvalProtocol(epochs=1, schedule="halfway", batch_size=256, seed=0, augment=DSA())
    make = lambda: _model(width)  # noqa: E731
    val = _images(256, seed=9)
    rows = []
    for count in stage_counts:
        stages = [Stage(*_images(CLASSES * ipc, seed=10 + k), 0.01) for k in range(count)]
        earlier, candidate = stages[:-1], stages[-1]
        with tempfile.TemporaryDirectory() as directory:
            cache = StartCache(Path(directory), "bench")
            ProgressiveValidator(earlier[:-1], candidate.labels, 1, make, val, protocol=protocol, nets=1,
                                 epochs=1, cache=cache).starts()  # stage i-1 leaves its nets

            def after():
                cache.path(len(earlier)).unlink(missing_ok=True)
                ProgressiveValidator(earlier, candidate.labels, 1, make, val, protocol=protocol, nets=1, epochs=1,
                                     cache=cache).starts()

            def before():
                ProgressiveValidator(earlier, candidate.labels, 1, make, val, protocol=protocol, nets=1,
                                     epochs=1).starts()

            times = _interleaved({"after": after, "before": before}, repeats)
        rows.append({"stage": count, **{k: _summary(v) for k, v in times.items()}})
    return {"rows": rows, "ipc": ipc, "epochs_per_phase": 1,
            "exponent_after": fit_exponent(stage_counts, [r["after"]["min_s"] for r in rows]),
            "exponent_before": fit_exponent(stage_counts, [r["before"]["min_s"] for r in rows])}


# ---------------------------------------------------------------------------- final-evaluation memory


def _phases_child(stages: int, ipc: int, variant: str) -> None:
    """In a fresh process: hold the synthetic set, build the progressive phases, train one batch of each
    phase (on this narrow net), print the peak RSS beyond the set itself."""
    from pdd_ray.evaluation import Phase, phases_for
    torch.set_num_threads(1)
    per_stage = CLASSES * ipc
    synset = [Stage(torch.rand(per_stage, *SHAPE), torch.arange(per_stage) % CLASSES, 0.01) for _ in range(stages)]
    held = _rss_bytes()
    if variant == "after":
        phases = phases_for(synset, "progressive", 1)
    else:  # before: each prefix union concatenated on its own
        phases = [Phase(torch.cat([s.images for s in synset[: k + 1]]), torch.cat([s.labels for s in synset[: k + 1]]),
                      0.01, 1) for k in range(stages)]
    model = create_model("convnet", SHAPE[0], CLASSES, SHAPE[-1], width=8, depth=DEPTH)
    optimizer = make_sgd(model, 0.01)
    for phase in phases:
        batch = torch.randint(len(phase.labels), (256,))
        train_epoch(model, phase.images[batch], phase.labels[batch], optimizer, 256)
    print(json.dumps({"peak_beyond_set_bytes": _peak_bytes() - held, "set_bytes": stages * per_stage * IMAGE_BYTES}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    """This process image's peak RSS (VmHWM: unlike ru_maxrss, it does not inherit the parent's across exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def final_eval_memory(stage_counts: dict[str, list[int]], ipc: int = 10) -> dict:
    """Peak host memory of the final evaluation's phases beyond the set, per variant and stage count."""
    rows = []
    for variant, counts in stage_counts.items():
        for count in counts:
            union = count * CLASSES * ipc * IMAGE_BYTES
            expected = union * (count + 1) / 2 if variant == "before" else union
            if union + expected + 2**30 > 0.9 * _available_bytes():  # the set, the phases, a constant
                rows.append({"variant": variant, "stages": count, "skipped": "not enough free memory here"})
                continue
            out = subprocess.run([sys.executable, __file__, "_phases", str(count), str(ipc), variant],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"variant": variant, "stages": count, "union_bytes": union, **measured,
                         "peak_over_union": measured["peak_beyond_set_bytes"] / union})
    fits = {}
    for variant in stage_counts:
        ok = [r for r in rows if r["variant"] == variant and "skipped" not in r]
        if len(ok) >= 2:
            fits[variant] = fit_exponent([r["stages"] for r in ok], [r["peak_beyond_set_bytes"] for r in ok])
    return {"rows": rows, "ipc": ipc, "exponent_vs_stages": fits}


# ---------------------------------------------------------------------------- the cost model


TINY = {  # tune_configs/pdd_mtt_tiny_imagenet_ipc10.yaml and the reference's recipe, stages of 10 IPC
    "classes": CLASSES, "ipc": 10, "train_images": 100_000, "iterations": 5000, "syn_steps": 20,
    "eval_every": 100, "val_nets": 5, "eval_epochs": 1001, "phase_epochs": 501, "experts": 100,
    "transition_epochs": 1000, "real_epochs": 23, "runs": 5, "transition_steps": 2000, "batch": 256,
}


def cost_model(unit_train: float, step_before, step_after, stages: int, devices: int, p: dict = TINY) -> dict:
    """Seconds per component for ``stages`` stages of ``p['ipc']`` IPC, before and after, on ``devices`` devices.

    Image passes are counted from the recipe; ``unit_train`` is the measured seconds per training image
    pass; ``step_before/after(union)`` the measured seconds per MTT student step. On several devices:
    experts spread over all of them (both); after, the final evaluation's runs train side by side and
    validation checks run beside the distillation on the other devices (before, both waited in line).
    """
    per_stage = p["classes"] * p["ipc"]
    union = [per_stage * k for k in range(1, stages + 1)]  # U_1 .. U_P
    checks = p["iterations"] // p["eval_every"] + 1
    before, after_faithful, after_fixed = {}, {}, {}
    real = p["real_epochs"] * p["train_images"]
    trans_faithful = sum(p["experts"] * (p["transition_epochs"] * union[i - 1] + real) for i in range(1, stages))
    trans_fixed = sum(p["experts"] * (p["transition_steps"] * p["batch"] + real) for i in range(1, stages))
    first = p["experts"] * real
    expert_spread = min(devices, p["experts"])
    before["experts"] = after_faithful["experts"] = (first + trans_faithful) * unit_train / expert_spread
    after_fixed["experts"] = (first + trans_fixed) * unit_train / expert_spread
    steps = p["iterations"] * p["syn_steps"]
    before["iterations"] = sum(steps * step_before(u) for u in union)
    after_faithful["iterations"] = after_fixed["iterations"] = sum(steps * step_after(u) for u in union)
    check = [checks * p["val_nets"] * p["eval_epochs"] * u * unit_train for u in union]
    starts_before = [p["val_nets"] * p["phase_epochs"] * sum(union[: i]) * unit_train for i in range(stages)]
    starts_after = [p["val_nets"] * p["phase_epochs"] * (union[i - 1] if i else 0) * unit_train for i in range(stages)]
    before["validation"] = sum(check) + sum(starts_before)
    side = max(devices - 1, 1)
    hidden = [max(0.0, (c + s) / side - steps * step_after(u)) if devices > 1 else c + s
              for c, s, u in zip(check, starts_after, union)]  # beside the stage: only what outlasts it waits
    after_faithful["validation"] = after_fixed["validation"] = sum(hidden)
    final = p["runs"] * p["phase_epochs"] * sum(union) * unit_train
    before["final_evaluation"] = final
    after_faithful["final_evaluation"] = after_fixed["final_evaluation"] = final / min(devices, p["runs"])
    out = {}
    for name, parts in (("before", before), ("after", after_faithful), ("after_fixed_transition", after_fixed)):
        total = sum(parts.values())
        out[name] = {"seconds": parts, "total_s": total,
                     "share": {k: v / total for k, v in parts.items()}}
    out["final_eval_host_bytes"] = {"before": sum(union) * IMAGE_BYTES, "after": union[-1] * IMAGE_BYTES}
    return out


def _linear(rows: list[dict], key: str):
    """seconds per step as a + b * union, fitted to the measured rows."""
    xs = [r["union"] for r in rows]
    ys = [r[key]["per_step_s"] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    b = max(b, 0.0)
    a = max(my - b * mx, 1e-9)
    return lambda u: a + b * u


def components(args) -> dict:
    torch.set_num_threads(2)
    width, device = args.width, args.device
    print(f"unit training cost (width {width}) ...", flush=True)
    unit = train_pass_cost(width, device=device)
    print(f"  {unit['per_image_s'] * 1e6:.1f} us per image pass", flush=True)
    print("MTT step against the union ...", flush=True)
    steps = mtt_step_cost(width, args.unions, device=device)
    for r in steps["rows"]:
        print(f"  union {r['union']:>6}: after {r['after']['per_step_s'] * 1e3:7.1f} ms/step, "
              f"before {r['before']['per_step_s'] * 1e3:7.1f} ms/step", flush=True)
    print("validation starts against the stage ...", flush=True)
    starts = validation_start_cost(width, args.val_stages)
    print("final-evaluation memory ...", flush=True)
    memory = final_eval_memory({"before": args.mem_before, "after": args.mem_after})
    before_step, after_step = _linear(steps["rows"], "before"), _linear(steps["rows"], "after")
    model = {}
    base = None
    for stages in (5, 10, 50):
        for devices in (1, 8):
            c = cost_model(unit["per_image_s"], before_step, after_step, stages, devices)
            base = base or c["before"]["total_s"]
            for name in ("before", "after", "after_fixed_transition"):
                c[name]["relative"] = c[name]["total_s"] / base
            model[f"{stages}x10 on {devices}"] = c
    return {"benchmark": "scale", "device": device, "width": width, "depth": DEPTH, "shape": SHAPE, "classes": CLASSES,
            "precision": "float32", "threads": torch.get_num_threads(), "unit_train": unit, "mtt_step": steps,
            "validation_starts": starts, "final_eval_memory": memory, "cost_model": model,
            "cost_model_recipe": TINY, "seed": 0,
            "evaluation_protocol": "timing only: no accuracy is measured here (see the e2e run)",
            "notes": ("CPU, narrow width: absolute seconds are this machine's; the cost model's shares and "
                      "ratios carry over, its hours do not (no GPU measurement in this run)"),
            "versions": versions(), "created": now()}


def print_tables(result: dict) -> None:
    s = result["mtt_step"]
    print(f"\nMTT step (ms), batch_syn 64: exponent vs union: before {s['exponent_before']:.2f}, "
          f"after {s['exponent_after']:.2f}")
    print("| union | before min | before median | after min | after median |\n|---|---|---|---|---|")
    for r in s["rows"]:
        b, a = r["before"], r["after"]
        print(f"| {r['union']} | {1e3 * b['min_s'] / s['syn_steps']:.1f} | {1e3 * b['median_s'] / s['syn_steps']:.1f} "
              f"| {1e3 * a['min_s'] / s['syn_steps']:.1f} | {1e3 * a['median_s'] / s['syn_steps']:.1f} |")
    v = result["validation_starts"]
    print(f"\nvalidation starts (s): exponent vs stage: before {v['exponent_before']:.2f}, after "
          f"{v['exponent_after']:.2f}\n| stage | before min | after min |\n|---|---|---|")
    for r in v["rows"]:
        print(f"| {r['stage']} | {r['before']['min_s']:.2f} | {r['after']['min_s']:.2f} |")
    m = result["final_eval_memory"]
    print(f"\nfinal evaluation, host memory beyond the set (GiB), exponents vs stages: {m['exponent_vs_stages']}")
    print("| variant | stages | union GiB | peak beyond set GiB | x union |\n|---|---|---|---|---|")
    for r in m["rows"]:
        if "skipped" in r:
            print(f"| {r['variant']} | {r['stages']} | - | skipped: {r['skipped']} | - |")
            continue
        print(f"| {r['variant']} | {r['stages']} | {r['union_bytes'] / 2**30:.2f} | "
              f"{r['peak_beyond_set_bytes'] / 2**30:.2f} | {r['peak_over_union']:.2f} |")
    print("\ncost model (Tiny-ImageNet recipe, stages of 10 IPC; relative to 5 stages before on 1 device)")
    print("| stages x ipc | devices | before | after | after, fixed transition | biggest share after | "
          "final-eval host GiB before / after |\n|---|---|---|---|---|---|---|")
    for key, c in result["cost_model"].items():
        share = max(c["after"]["share"].items(), key=lambda kv: kv[1])
        mem = c["final_eval_host_bytes"]
        print(f"| {key.split(' on ')[0]} | {key.split(' on ')[1]} | {c['before']['relative']:.2f} | "
              f"{c['after']['relative']:.2f} | {c['after_fixed_transition']['relative']:.2f} | "
              f"{share[0]} {100 * share[1]:.0f}% | {mem['before'] / 2**30:.1f} / {mem['after'] / 2**30:.1f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_phases":
        _phases_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("components", help="unit costs, memory, exponents and the cost model")
    comp.add_argument("--width", type=int, default=8)
    comp.add_argument("--device", default="cpu", help="cuda: unit costs and MTT steps on the GPU (absolute figures)")
    comp.add_argument("--unions", type=int, nargs="+", default=[4000, 12000, 36000])
    comp.add_argument("--val-stages", type=int, nargs="+", default=[2, 4, 8])
    comp.add_argument("--mem-before", type=int, nargs="+", default=[2, 4, 8])
    comp.add_argument("--mem-after", type=int, nargs="+", default=[2, 4, 8, 16, 50])
    mem = sub.add_parser("memory", help="only the final evaluation's memory, into the stored components")
    mem.add_argument("--mem-before", type=int, nargs="+", default=[2, 4, 8])
    mem.add_argument("--mem-after", type=int, nargs="+", default=[2, 4, 8, 16, 50])
    e2e = sub.add_parser("e2e", help="10 stages x 2 IPC on a fake Tiny-ImageNet, killed once and resumed")
    e2e.add_argument("--width", type=int, default=8)
    e2e.add_argument("--stages", type=int, default=10)
    e2e.add_argument("--kill-after-stage", type=int, default=4)
    args = parser.parse_args()
    if args.command == "memory":  # re-measure the final evaluation's memory into the stored components
        stored = json.loads(RESULTS.read_text())
        stored["components"]["final_eval_memory"] = final_eval_memory({"before": args.mem_before,
                                                                       "after": args.mem_after})
        print_tables(stored["components"])
        write_json(RESULTS, stored)
        return
    if args.command == "components":
        result = components(args)
        print_tables(result)
        kind = args.device.split(":")[0]
        _merge(result, "components" if kind == "cpu" else f"components_{kind}")
    else:
        from benchmarks.scale_e2e import run_e2e
        result = run_e2e(args)
        _merge(result, "e2e")


def _merge(result: dict, key: str) -> None:
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    stored[key] = result
    write_json(RESULTS, stored)
    print(f"\nwrote {RESULTS.relative_to(ROOT)} [{key}]")


if __name__ == "__main__":
    main()
