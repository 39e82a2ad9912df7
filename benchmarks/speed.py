"""Speed: pdd-ray's fast path against fp32 and against a reference-style MTT loop, on this machine.

    python benchmarks/speed.py                       # every part, CPU, 2 threads
    python benchmarks/speed.py --part mtt --rounds 3 # one part, more interleaved rounds
    python benchmarks/speed.py --device cuda         # the GPU run (bf16 and TF32, several trajectories)

The fast path is what ``precision=auto`` resolves to on this device (bf16 autocast where the
hardware multiplies bf16 natively: AMX/AVX512-BF16 CPUs, CUDA sm80+; fp32 elsewhere) plus the
process settings every pdd-ray process makes (``pdd_ray.runtime``: torch threads, glibc malloc
keeping freed activations). The plain variants run with neither: the way the research code runs.

Parts (each prints a table and merges into benchmarks/results/speed.json under the device kind):

* ``peak``: this machine's matmul GFLOP/s in fp32 and bf16 (the roofline the rest is held against).
* ``mtt``: one MTT iteration, ConvNet-3 width 128, instance norm, 1x28x28, 100 synthetic
  images, batch_syn 100, DSA, at 10 and 20 unrolled steps: reference-style (module whose
  parameters are re-bound to views of a flat tensor, ``create_graph``, ``loss.backward()``,
  as the official ``distill.py``) vs pdd-ray standard and memory-saving, plain and fast.
  Every (variant, steps) runs in a fresh subprocess (malloc settings are per process) after a
  1-step warm-up; variants are interleaved round by round; min and median are reported.
  FLOPs per iteration come from torch's ``FlopCounterMode``; achieved GFLOP/s = FLOPs / median.
* ``agreement``: image-gradient cosine and relative error, loss and lr-gradient error of the
  bf16 path against fp32, per mode (fewer steps where bf16 is emulated and slow).
* ``train``: expert/evaluation training images/s (``train_epoch``, batch 256, DSA), plain vs
  fast, and whether the fast path's parameters equal fp32's (identical when the fast path is fp32).
* ``quality`` (where the fast path is bf16, or with ``--force-bf16``): (1) training accuracy:
  3 networks (seeds 0-2, ConvNet-3 width 128) trained on 10k Fashion-MNIST images in fp32 and in
  bf16, final test accuracy; (2) distilled sets: the quickstart recipe and one width-128 stage of
  it, each distilled in fp32 and in bf16 from the same seed and the same expert buffers (the bf16
  run is handed a copy of the fp32 run's buffers), then both sets evaluated by one fp32
  protocol, the recipe's own. Target: within 0.5 points. Where ``precision=auto`` resolves to
  fp32 the fast path computes in fp32, so both figures equal fp32's by construction and the part
  records that instead of running (bf16 emulated in software is ~10x slower than fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/speed.py` from the root

from benchmarks.distill import ITEM, SIZE, WIDTH, Rebound, make_matcher, make_setup, reference_style  # noqa: E402
from pdd_ray.augment.dsa import DSA  # noqa: E402
from pdd_ray.config import AugmentConfig, DataConfig, EvalConfig, ModelConfig, load_config  # noqa: E402
from pdd_ray.data.bundle import create_dataset  # noqa: E402
from pdd_ray.distill.config import DistillConfig  # noqa: E402
from pdd_ray.evaluation import EvalProtocol  # noqa: E402
from pdd_ray.jobs.evaluate import evaluate_config, evaluate_directory  # noqa: E402
from pdd_ray.jobs.run import run_pdd  # noqa: E402
from pdd_ray.models import create_model, model_factory  # noqa: E402
from pdd_ray.synset import Stage  # noqa: E402
from pdd_ray.precision import cpu_flags, describe, has_fast_bf16, resolve_precision  # noqa: E402
from pdd_ray.provenance import now, versions, write_json  # noqa: E402
from pdd_ray.runtime import configure_compute, describe_compute  # noqa: E402
from pdd_ray.train.loop import train_epoch  # noqa: E402

OUT = Path(__file__).parent / "results" / "speed.json"
QUICKSTART = Path(__file__).resolve().parent.parent / "tune_configs" / "quickstart_fashion_mnist.yaml"
# The quality check's distilled sets: the quickstart as it is, and one stage of it at width 128.
QUALITY_SETS = {"quickstart": [], "width128_one_stage": ["model.width=128", "stages.num_stages=1"]}
SEED = 0
TRAIN_BATCH = 256
TARGETS = {"mtt_fast_over_reference": 2.5, "memory_saving_over_standard_max": 1.2, "train_fast_over_plain": 3.0,
           "quality_points": 0.5}


# ---------------------------------------------------------------------------- one measurement per process


def child(spec: dict) -> dict:
    """One (variant, steps) in this fresh process: settings, 1-step warm-up, timed iterations."""
    device = torch.device(spec["device"])
    if spec["fast"]:
        configure_compute(spec["threads"])
    elif spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec.get("tf32"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        model, store, state = make_setup(Path(tmp) / "store", device)
        run = _iteration(spec, model, store, state, device, spec["steps"])
        _iteration(spec, model, store, state, device, 1)()  # one-time costs outside the timings
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, grad = [], None
        for _ in range(spec["repeats"]):
            _sync(device)
            start = time.perf_counter()
            loss, grad, grad_lr = run()
            _sync(device)
            seconds.append(time.perf_counter() - start)
        if spec.get("save"):
            torch.save({"loss": loss, "grad": grad.cpu(), "grad_lr": grad_lr.cpu()}, spec["save"])
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return {"seconds": seconds, "peak_mib": peak, "compute": describe_compute()}


def _iteration(spec: dict, model, store, state, device, steps: int):
    """A zero-argument function running one iteration of ``spec``'s variant: (loss, d images, d lr)."""
    if spec["unroll"] == "reference":
        net, augment = Rebound(model), DSA()
        config = make_matcher(store, model, device, steps, False).config
        return lambda: reference_style(net, store, state, config, augment, ITEM)
    matcher = make_matcher(store, model, device, steps, spec["unroll"] == "memory_saving")
    matcher.precision = spec["precision"]
    items = [ITEM] * spec.get("trajectories", 1)

    def run():
        parts = [matcher.contribution(state, item) for item in items]
        return sum(p.loss for p in parts), sum(p.grad_images for p in parts), sum(p.grad_lr for p in parts)
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "PDD_RAY_MALLOC_TUNING": "1" if spec["fast"] else "0"})
    if out.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- parts


def peak(args) -> dict:
    """Matmul GFLOP/s in fp32 and bf16 (bf16 smaller where emulated: it is slow, not the point)."""
    rows = {}
    for dtype, n in ((torch.float32, 2048), (torch.bfloat16, 2048 if args.fast_precision == "bf16" else 512)):
        a = torch.randn(n, n, device=args.device, dtype=dtype)
        b = torch.randn(n, n, device=args.device, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            _sync(torch.device(args.device))
            start = time.perf_counter()
            a @ b
            _sync(torch.device(args.device))
            times.append(time.perf_counter() - start)
        rows[str(dtype).removeprefix("torch.")] = {"n": n, "gflops": 2 * n**3 / min(times) / 1e9}
    print(f"matmul peak: fp32 {rows['float32']['gflops']:.0f} GFLOP/s, bf16 {rows['bfloat16']['gflops']:.0f} GFLOP/s")
    return rows


def mtt(args, peaks: dict | None) -> dict:
    """Reference-style vs pdd-ray unrolls, plain vs fast, interleaved round by round."""
    fast = args.fast_precision
    variants = [("reference", "fp32", False), ("standard", "fp32", False), ("memory_saving", "fp32", False),
                ("standard", fast, True), ("memory_saving", fast, True)]
    if args.device == "cuda":
        variants += [("standard", "fp32", True, {"tf32": True}), ("standard", fast, True, {"trajectories": 4})]
    seconds: dict[tuple, list[float]] = {}
    extra: dict[tuple, dict] = {}
    for round_ in range(args.rounds):
        for steps in args.steps:
            for unroll, precision, is_fast, *more in variants:
                options = more[0] if more else {}
                key = (unroll, precision, is_fast, json.dumps(options, sort_keys=True), steps)
                spec = {"device": args.device, "threads": args.threads, "unroll": unroll, "precision": precision,
                        "fast": is_fast, "steps": steps, "repeats": 1, **options}
                result = _run_child(spec)
                seconds.setdefault(key, []).extend(result["seconds"])
                extra[key] = result
                print(f"  round {round_ + 1} {steps:>3} steps {_label(key):<32} {result['seconds'][0]:7.2f} s",
                      flush=True)
    flops = {steps: _count_flops(args, steps) for steps in args.steps}
    rows = []
    for key, times in seconds.items():
        unroll, precision, is_fast, options, steps = key
        reference = statistics.median(seconds[("reference", "fp32", False, "{}", steps)])
        standard = statistics.median(seconds.get(("standard", precision, is_fast, "{}", steps), times))
        median = statistics.median(times)
        row = {"variant": _label(key), "unroll": unroll, "precision": precision, "fast": is_fast,
               "options": json.loads(options), "syn_steps": steps, "seconds": times, "median_s": median,
               "min_s": min(times), "speedup_over_reference": reference / median,
               "speedup_over_reference_min": min(seconds[("reference", "fp32", False, "{}", steps)]) / min(times),
               "time_over_standard_same_path": median / standard, "peak_mib": extra[key]["peak_mib"],
               "compute": extra[key]["compute"]}
        work = flops[steps]["memory_saving" if unroll == "memory_saving" else "standard"]
        row["gflop"] = work / 1e9 * json.loads(options).get("trajectories", 1)
        row["gflops_achieved"] = row["gflop"] / median
        if peaks:
            row["fraction_of_peak"] = row["gflops_achieved"] / peaks["bfloat16" if precision == "bf16" else
                                                                     "float32"]["gflops"]
        rows.append(row)
    print(f"{'steps':>5} {'variant':<32} {'median s':>9} {'min s':>7} {'vs ref':>7} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['syn_steps']:>5} {r['variant']:<32} {r['median_s']:>9.2f} {r['min_s']:>7.2f} "
              f"{r['speedup_over_reference']:>6.2f}x {r['gflops_achieved']:>8.1f} "
              f"{100 * r.get('fraction_of_peak', float('nan')):>7.1f}%")
    return {"rows": rows, "flops": flops, "rounds": args.rounds}


def _label(key: tuple) -> str:
    unroll, precision, is_fast, options, _ = key
    text = "reference-style fp32" if unroll == "reference" else f"{unroll} {precision} {'fast' if is_fast else 'plain'}"
    opts = json.loads(options)
    return text + "".join(f" {k}={v}" for k, v in opts.items())


def _count_flops(args, steps: int) -> dict:
    """FLOPs of one iteration per unroll (torch's FlopCounterMode: convolutions and matmuls, both passes)."""
    from torch.utils.flop_counter import FlopCounterMode
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        model, store, state = make_setup(Path(tmp) / "store", torch.device(args.device))
        for unroll in ("standard", "memory_saving"):
            spec = {"unroll": unroll, "precision": "fp32", "trajectories": 1}
            run = _iteration(spec, model, store, state, torch.device(args.device), steps)
            with FlopCounterMode(display=False) as counter:
                run()
            counts[unroll] = counter.get_total_flops()
    return counts


def agreement(args) -> dict:
    """bf16 against fp32 on the same item, per unroll: image-gradient cosine and relative errors."""
    steps = args.steps[0] if args.fast_precision == "bf16" else args.agreement_steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for unroll in ("standard", "memory_saving"):
            out = {}
            for precision in ("fp32", "bf16"):
                path = Path(tmp) / f"{unroll}_{precision}.pt"
                _run_child({"device": args.device, "threads": args.threads, "unroll": unroll, "precision": precision,
                            "fast": False, "steps": steps, "repeats": 1, "save": str(path)})
                out[precision] = torch.load(path, weights_only=True)
            a, b = out["fp32"], out["bf16"]
            rows.append({"unroll": unroll, "syn_steps": steps,
                         "grad_images_cosine": float(F.cosine_similarity(a["grad"].flatten().double(),
                                                                         b["grad"].flatten().double(), dim=0)),
                         "grad_images_rel_error": float((a["grad"] - b["grad"]).norm() / a["grad"].norm()),
                         "loss_rel_error": abs(float(a["loss"]) - float(b["loss"])) / abs(float(a["loss"])),
                         "grad_lr_rel_error": float((a["grad_lr"] - b["grad_lr"]).abs() / a["grad_lr"].abs())})
    print(f"{'unroll':<14} {'steps':>5} {'cosine':>9} {'rel err':>9} {'loss err':>9} {'lr err':>9}")
    for r in rows:
        print(f"{r['unroll']:<14} {r['syn_steps']:>5} {r['grad_images_cosine']:>9.5f} "
              f"{r['grad_images_rel_error']:>9.2e} {r['loss_rel_error']:>9.2e} {r['grad_lr_rel_error']:>9.2e}")
    return {"rows": rows}


def train_child(spec: dict) -> dict:
    """Images/s of ``train_epoch`` (ConvNet-3 w128, batch 256, DSA) and the final parameters' checksum."""
    if spec["fast"]:
        configure_compute(spec["threads"])
    else:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    generator = torch.Generator().manual_seed(SEED)
    count = spec["images"]
    images = torch.randn(count, 1, SIZE, SIZE, generator=generator).to(device)
    labels = torch.randint(10, (count,), generator=generator).to(device)
    torch.manual_seed(SEED)
    model = create_model("convnet", 1, 10, SIZE, width=WIDTH, depth=3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    augment = DSA()

    def epoch(n: int) -> float:
        return train_epoch(model, images[:n], labels[:n], optimizer, TRAIN_BATCH, augment,
                           torch.Generator().manual_seed(SEED), precision=spec["precision"])
    epoch(TRAIN_BATCH)  # warm-up
    _sync(device)
    start = time.perf_counter()
    epoch(count)
    _sync(device)
    seconds = time.perf_counter() - start
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    return {"seconds": [seconds], "images_per_s": count / seconds, "param_checksum": checksum}


def train(args) -> dict:
    """Plain fp32 vs the fast path, interleaved; whether the fast path trained the same parameters."""
    variants = [("fp32", False), (args.fast_precision, True)]
    per = {v: [] for v in variants}
    checksums = {}
    for _ in range(args.rounds):
        for precision, is_fast in variants:
            spec = {"device": args.device, "threads": args.threads, "precision": precision, "fast": is_fast,
                    "images": args.train_images}
            out = subprocess.run([sys.executable, __file__, "--train-child", json.dumps(spec)], capture_output=True,
                                 text=True, env={**os.environ, "PDD_RAY_MALLOC_TUNING": "1" if is_fast else "0"})
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            result = json.loads(out.stdout.strip().splitlines()[-1])
            per[(precision, is_fast)].append(result["images_per_s"])
            checksums[(precision, is_fast)] = result["param_checksum"]
    plain, fast = per[variants[0]], per[variants[1]]
    ratios = [f / p for f, p in zip(fast, plain)]
    row = {"plain_images_per_s": plain, "fast_images_per_s": fast, "fast_precision": args.fast_precision,
           "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
           "same_parameters_as_fp32": checksums[variants[0]] == checksums[variants[1]],
           "images": args.train_images, "batch": TRAIN_BATCH}
    print(f"train_epoch images/s: plain fp32 median {statistics.median(plain):.0f}, fast ({args.fast_precision}) "
          f"median {statistics.median(fast):.0f}; ratio min {row['ratio_min']:.2f} median {row['ratio_median']:.2f}; "
          f"same parameters as fp32: {row['same_parameters_as_fp32']}")
    return row


def quality(args) -> dict:
    """The fast path's accuracy against fp32: trained networks, and distilled sets (module docstring)."""
    if args.fast_precision == "fp32" and not args.force_bf16:
        reason = ("precision=auto resolves to fp32 on this device: the fast path computes in fp32, so its "
                  "networks and sets are the fp32 ones by construction (--force-bf16 runs the check anyway)")
        print(f"quality: skipped; {reason}")
        return {"skipped": reason}
    work = Path(args.quality_work)
    shutil.rmtree(work, ignore_errors=True)
    result = {"precision": "bf16", "training": training_accuracy(args, "bf16"), "distilled_sets": {}}
    for name in args.quality_sets:
        result["distilled_sets"][name] = distilled_set_gap(args, "bf16", QUALITY_SETS[name], work / name)
    return result


def training_accuracy(args, precision: str) -> dict:
    """Final test accuracy of ``args.quality_runs`` networks trained on real images in fp32 and in ``precision``."""
    data = create_dataset(DataConfig(dataset="fashion_mnist", train_per_class=args.quality_train_per_class))
    real = Stage(data.train.images, data.train.labels, None, {})
    make_model = model_factory(ModelConfig(arch="convnet", width=WIDTH), data.image_shape, data.num_classes,
                               torch.device(args.device))
    eval_config = EvalConfig(runs=args.quality_runs, epochs=args.quality_epochs, mode="union", lr=0.01)
    row = {"runs": args.quality_runs, "epochs": args.quality_epochs, "train_images": len(real.labels)}
    for p in ("fp32", precision):
        protocol = EvalProtocol.from_config(eval_config, AugmentConfig(), "convnet", p)
        start = time.perf_counter()
        outcome = protocol.evaluate([real], (data.test.images, data.test.labels), make_model, progress=False,
                                    device=args.device)
        row[p] = {"accuracy_mean": 100 * outcome.mean, "accuracy_std": 100 * outcome.std,
                  "final": [100 * a for a in outcome.final], "seconds": time.perf_counter() - start}
    row["gap_points"] = row[precision]["accuracy_mean"] - row["fp32"]["accuracy_mean"]
    row["within_target"] = abs(row["gap_points"]) <= TARGETS["quality_points"]
    print(f"training accuracy: fp32 {row['fp32']['accuracy_mean']:.2f}, {precision} "
          f"{row[precision]['accuracy_mean']:.2f} (gap {row['gap_points']:+.2f} points)")
    return row


def distilled_set_gap(args, precision: str, overrides: list[str], work: Path) -> dict:
    """One recipe distilled in fp32 and in ``precision`` from one seed and one buffer; both sets evaluated in fp32."""
    row = {"overrides": [*overrides, *args.quality_overrides]}
    for p in ("fp32", precision):
        if p != "fp32":  # the same expert buffers (stage 1 and the transitions) as the fp32 run
            shutil.copytree(work / "fp32" / "experts", work / p / "experts")
        config = load_config(DistillConfig, QUICKSTART, [f"out={work / p}", f"precision={p}",
                                                         f"device={args.device}", *row["overrides"]])
        start = time.perf_counter()
        own = run_pdd(config, progress=False)["metrics"]["pdd"]
        seconds = time.perf_counter() - start
        synthetic = work / p / "synthetic"
        entry = evaluate_directory(synthetic, evaluate_config(synthetic, overrides=[f"device={args.device}"]),
                                   progress=False)
        row[p] = {"accuracy_mean": 100 * entry["result"]["mean"], "accuracy_std": 100 * entry["result"]["std"],
                  "own_protocol_accuracy_mean": 100 * own["mean"], "run_seconds": seconds,
                  "protocol": entry["protocol"] + " (fp32)"}
    row["gap_points"] = row[precision]["accuracy_mean"] - row["fp32"]["accuracy_mean"]
    row["within_target"] = abs(row["gap_points"]) <= TARGETS["quality_points"]
    print(f"distilled set {work.name}: fp32 {row['fp32']['accuracy_mean']:.2f}, {precision} "
          f"{row[precision]['accuracy_mean']:.2f} (gap {row['gap_points']:+.2f} points)")
    return row


# ---------------------------------------------------------------------------- main


def record(args, results: dict) -> None:
    """Merge this run's parts into the JSON file under the device kind, with provenance and the hardware."""
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.is_file() else {}
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    saved[device.type] = {**saved.get(device.type, {}), **results, "device": name, "cpu_flags": flags,
                          "fast_bf16": has_fast_bf16(device), "fast_precision": args.fast_precision,
                          "precision": describe(args.fast_precision), "threads": args.threads, "seed": SEED,
                          "targets": TARGETS, "config": {k: v for k, v in vars(args).items() if "child" not in k},
                          "versions": versions(), "measured": now(),
                          "protocol": "each variant in a fresh subprocess, variants interleaved per round; "
                                      "min and median over rounds; no evaluation protocol (speed only)"}
    write_json(out, saved)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"CPU, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "peak", "mtt", "agreement", "train", "quality"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (ignored on CUDA)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (one timed iteration each)")
    parser.add_argument("--agreement-steps", type=int, default=2,
                        help="unrolled steps for the bf16 agreement where bf16 is emulated (slow)")
    parser.add_argument("--train-images", type=int, default=2560, help="images per timed training epoch")
    parser.add_argument("--force-bf16", action="store_true", help="run the quality part where bf16 is not fast")
    parser.add_argument("--quality-sets", nargs="*", default=list(QUALITY_SETS), choices=list(QUALITY_SETS))
    parser.add_argument("--quality-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="added to every quality-check distillation (e.g. a smaller stages.iterations)")
    parser.add_argument("--quality-runs", type=int, default=3)
    parser.add_argument("--quality-epochs", type=int, default=10, help="epochs of the training-accuracy check")
    parser.add_argument("--quality-train-per-class", type=int, default=1000)
    parser.add_argument("--quality-work", default="/tmp/pdd-speed-quality")
    parser.add_argument("--out", default=str(OUT), help="the JSON file results are merged into")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.train_child:
        print(json.dumps(child(json.loads(args.child)) if args.child else train_child(json.loads(args.train_child))))
        return
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU")
    args.fast_precision = resolve_precision("auto", args.device)
    print(f"device {args.device}: precision=auto resolves to {args.fast_precision} ({describe(args.fast_precision)})")
    torch.set_num_threads(args.threads)
    results = {}
    peaks = None
    if args.part in ("all", "peak", "mtt"):
        peaks = results["peak"] = peak(args)
    if args.part in ("all", "mtt"):
        results["mtt"] = mtt(args, peaks)
        record(args, results)
    if args.part in ("all", "agreement"):
        results["agreement"] = agreement(args)
        record(args, results)
    if args.part in ("all", "train"):
        results["train"] = train(args)
        record(args, results)
    if args.part in ("all", "quality"):
        results["quality"] = quality(args)
    record(args, results)


if __name__ == "__main__":
    main()
