"""MTT matching: cost of one iteration vs syn_steps, against a reference-style unroll, and trajectory dtype.

    python benchmarks/distill.py                    # all three parts on CPU
    python benchmarks/distill.py --part scaling     # (1) seconds and peak memory vs syn_steps, both modes
    python benchmarks/distill.py --part reference   # (2) our unroll vs module re-parameterisation + create_graph
    python benchmarks/distill.py --part dtype       # (3) float32 vs float16 vs bfloat16 trajectory storage
    python benchmarks/distill.py --device cuda      # the same on a GPU (peak memory from the CUDA allocator)

Setting: ConvNet-3 width 128 on Fashion-MNIST-shaped data (1x28x28, 10 classes), an IPC-10
union of 100 random images, batch_syn 100, DSA on, one random-walk expert trajectory.
Each part prints a table and merges its results into benchmarks/results/distill.json,
under the device kind ("cpu" or "cuda"), with provenance.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pdd_ray.augment.dsa import DSA
from pdd_ray.distill.base import SyntheticState
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher, MTTWorkItem, batch_schedule, step_generator
from pdd_ray.models import FlatForward, ParamLayout, create_model, flatten_params
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.trajectories import TrajectoryStore

OUT = Path(__file__).parent / "results" / "distill.json"
SEED = 0
IPC, CLASSES, SIZE, WIDTH = 10, 10, 28, 128
ITEM = MTTWorkItem(expert=0, start_epoch=1, seed=12345)
TARGETS = {"memory_saving_peak_80_over_10": 1.3, "memory_saving_time_over_standard": 1.5}


# ---------------------------------------------------------------------------- shared setup


def make_setup(directory: Path, device: torch.device, store_dtype: str = "float32", drift: float = 0.02):
    """Model, one-expert store (random walk from init), synthetic state; all from SEED."""
    torch.manual_seed(SEED)
    model = create_model("convnet", 1, CLASSES, SIZE, width=WIDTH, depth=3).to(device)
    layout = ParamLayout.of(model)
    store = TrajectoryStore.create(directory, dataset="fashion_mnist", preprocessing={}, model={"width": WIDTH},
                                   layout=layout, recipe={}, num_snapshots=5, dtype=store_dtype)
    store.write_expert(0, random_walk(model, layout, epochs=4, drift=drift), {})
    gen = torch.Generator().manual_seed(SEED + 1)
    state = SyntheticState(torch.empty(0, 1, SIZE, SIZE, device=device),
                           torch.empty(0, dtype=torch.long, device=device),
                           torch.randn(IPC * CLASSES, 1, SIZE, SIZE, generator=gen).to(device).requires_grad_(True),
                           torch.arange(CLASSES).repeat_interleave(IPC).to(device),
                           torch.tensor(0.01, device=device).requires_grad_(True))
    return model, store, state


def random_walk(model, layout: ParamLayout, epochs: int, drift: float) -> torch.Tensor:
    """Init plus ``epochs`` snapshots; each epoch moves every parameter tensor by ``drift`` x its norm, randomly."""
    gen = torch.Generator().manual_seed(SEED + 2)
    snapshots = [flatten_params(model).cpu()]
    for _ in range(epochs):
        moved = []
        for chunk in torch.split(snapshots[-1], [int(torch.Size(s).numel()) for s in layout.shapes]):
            step = torch.randn(chunk.shape, generator=gen)
            moved.append(chunk + drift * (chunk.norm() + 1e-3) * step / step.norm())
        snapshots.append(torch.cat(moved))
    return torch.stack(snapshots)


def make_matcher(store, model, device, steps: int, memory_saving: bool) -> MTTMatcher:
    config = MTTConfig(syn_steps=steps, expert_epochs=2, max_start_epoch=2, batch_syn=IPC * CLASSES,
                       memory_saving=memory_saving)
    return MTTMatcher(config, store, FlatForward(model), DSA(), device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


# ---------------------------------------------------------------------------- (1) scaling with syn_steps


class PeakMemory:
    """Peak memory growth of this process over a baseline taken at construction (MiB)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline = torch.cuda.memory_allocated(device)
            self.how = "torch.cuda.max_memory_allocated minus allocated after setup"
        else:
            # Reset the kernel's high-water mark so setup transients do not hide the iteration's peak.
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.reset = True
                self.how = "VmHWM (reset after setup via /proc/self/clear_refs) minus VmRSS after setup"
            except OSError:
                self.reset = False
                self.how = "ru_maxrss minus VmRSS after setup (high-water mark could not be reset)"
            self.baseline = _status_kib("VmRSS") * 1024

    def growth_mib(self) -> float:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.baseline) / 2**20
        peak = _status_kib("VmHWM") * 1024 if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return (peak - self.baseline) / 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: dict) -> dict:
    """One (mode, syn_steps) measurement in a fresh process: warm-up, then timed iterations."""
    device = torch.device(spec["device"])
    with tempfile.TemporaryDirectory() as tmp:
        model, store, state = make_setup(Path(tmp) / "store", device)
        store.snapshot(0, ITEM.start_epoch), store.snapshot(0, ITEM.start_epoch + 2)  # map the pages once
        memory = PeakMemory(device)
        # A 2-step warm-up pays one-time costs (kernel selection, allocator growth) outside the timings.
        make_matcher(store, model, device, 2, spec["memory_saving"]).contribution(state, ITEM)
        matcher = make_matcher(store, model, device, spec["steps"], spec["memory_saving"])
        seconds, losses = [], []
        for _ in range(spec["repeats"]):
            s, c = timed(lambda: matcher.contribution(state, ITEM), device)
            seconds.append(s)
            losses.append(c.loss)
        return {"seconds": seconds, "peak_growth_mib": memory.growth_mib(), "memory_measure": memory.how,
                "loss": losses[0]}


def scaling(args) -> None:
    """Seconds per iteration and peak memory vs syn_steps, each (mode, steps) in a fresh subprocess."""
    rows = []
    for memory_saving in (False, True):
        mode = "memory_saving" if memory_saving else "standard"
        for steps in args.steps:
            repeats = args.repeats if steps <= args.repeat_until else 1
            predicted = _predicted_peak(rows, mode, steps)
            if predicted is not None and predicted > args.max_memory_mib:
                print(f"{mode:>13} {steps:>5}  skipped: predicted peak {predicted / 1024:.1f} GiB "
                      f"> --max-memory-mib {args.max_memory_mib}")
                rows.append({"mode": mode, "syn_steps": steps, "skipped": True, "predicted_peak_growth_mib": predicted})
                continue
            spec = {"device": args.device, "memory_saving": memory_saving, "steps": steps, "repeats": repeats}
            result = _run_child(spec, args.threads)
            row = {"mode": mode, "syn_steps": steps, "repeats": repeats,
                   "seconds_per_iteration": statistics.median(result["seconds"]), **result}
            rows.append(row)
            print(f"{mode:>13} {steps:>5} {row['seconds_per_iteration']:>9.2f} s {row['peak_growth_mib']:>9.0f} MiB")
    summary = _scaling_summary(rows)
    print(_scaling_table(rows, summary))
    record(args, "scaling", {"rows": rows, "summary": summary, "targets": TARGETS,
                             "what": "one MTT iteration (one trajectory) of ConvNet-3 width 128, 1x28x28, 10 classes, "
                                     "100-image union (IPC 10), batch_syn 100, DSA; each (mode, syn_steps) in a fresh "
                                     "subprocess after a 2-step warm-up; peak memory = growth over the post-setup "
                                     "baseline; rows with 'skipped' were not run because the standard mode's "
                                     "memory, extrapolated linearly from the smaller runs, would not fit"})


def _run_child(spec: dict, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _predicted_peak(rows: list[dict], mode: str, steps: int) -> float | None:
    """Linear extrapolation of peak memory from the two largest runs of the same mode."""
    done = [r for r in rows if r["mode"] == mode and not r.get("skipped")]
    if len(done) < 2:
        return None
    a, b = done[-2], done[-1]
    slope = (b["peak_growth_mib"] - a["peak_growth_mib"]) / (b["syn_steps"] - a["syn_steps"])
    return b["peak_growth_mib"] + slope * (steps - b["syn_steps"])


def _scaling_summary(rows: list[dict]) -> dict:
    run = {(r["mode"], r["syn_steps"]): r for r in rows if not r.get("skipped")}
    steps = sorted({s for _, s in run})
    saving = [run[("memory_saving", s)] for s in steps if ("memory_saving", s) in run]
    ratios = {s: run[("memory_saving", s)]["seconds_per_iteration"] / run[("standard", s)]["seconds_per_iteration"]
              for s in steps if ("memory_saving", s) in run and ("standard", s) in run}
    out = {"memory_saving_time_over_standard": ratios}
    if len(saving) >= 2:
        out["memory_saving_peak_largest_over_smallest"] = saving[-1]["peak_growth_mib"] / saving[0]["peak_growth_mib"]
        out["memory_saving_peak_steps"] = [saving[0]["syn_steps"], saving[-1]["syn_steps"]]
    standard = [run[("standard", s)] for s in steps if ("standard", s) in run]
    if len(standard) >= 2:
        out["standard_mib_per_step"] = ((standard[-1]["peak_growth_mib"] - standard[0]["peak_growth_mib"])
                                        / (standard[-1]["syn_steps"] - standard[0]["syn_steps"]))
    if ratios:
        out["memory_saving_time_over_standard_max"] = max(ratios.values())
    return out


def _scaling_table(rows: list[dict], summary: dict) -> str:
    lines = [f"{'mode':>13} {'steps':>5} {'s/iter':>9} {'peak MiB':>10} {'reps':>4}"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"{r['mode']:>13} {r['syn_steps']:>5} {'skipped':>9} "
                         f"{'~' + format(r['predicted_peak_growth_mib'], '.0f'):>10}")
        else:
            lines.append(f"{r['mode']:>13} {r['syn_steps']:>5} {r['seconds_per_iteration']:>9.2f} "
                         f"{r['peak_growth_mib']:>10.0f} {r['repeats']:>4}")
    if "memory_saving_peak_largest_over_smallest" in summary:
        a, b = summary["memory_saving_peak_steps"]
        lines.append(f"memory-saving peak {b} vs {a} steps: {summary['memory_saving_peak_largest_over_smallest']:.2f}x "
                     f"(target <= {TARGETS['memory_saving_peak_80_over_10']}x)")
    for s, ratio in summary["memory_saving_time_over_standard"].items():
        lines.append(f"memory-saving / standard time at {s} steps: {ratio:.2f}x "
                     f"(target <= {TARGETS['memory_saving_time_over_standard']}x)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- (2) against the reference-style unroll


class Rebound:
    """The reference code's way to run a net on a flat vector: delete its parameters and, before
    every forward, re-bind each as a plain attribute holding a view of the flat tensor."""

    def __init__(self, module: torch.nn.Module):
        self.module = copy.deepcopy(module)
        self.slots = []
        for sub in self.module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    self.slots.append((sub, name, p.shape, p.numel()))
                    del sub._parameters[name]

    def __call__(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        offset = 0
        for sub, name, shape, n in self.slots:
            setattr(sub, name, flat[offset:offset + n].view(shape))
            offset += n
        return self.module(x)


def reference_style(net: Rebound, store, state: SyntheticState, config: MTTConfig, augment: DSA, item: MTTWorkItem):
    """One iteration written as the reference does: a list of student params, create_graph, .backward()."""
    images = state.images.detach().clone().requires_grad_(True)
    lr = state.lr.detach().clone().requires_grad_(True)
    start = store.snapshot(item.expert, item.start_epoch).to(images.device)
    target = store.snapshot(item.expert, item.start_epoch + config.expert_epochs).to(images.device)
    labels = state.labels  # the benchmark's union has no frozen part, so it is just the live images
    schedule = batch_schedule(len(labels), config.syn_steps, config.batch_syn, item.seed)
    student_params = [start.clone().requires_grad_(True)]
    for k in range(config.syn_steps):
        x = images[schedule[k].to(images.device)]
        x = augment.apply(x, augment.sample(len(x), (SIZE, SIZE), step_generator(item.seed, k)))
        ce = F.cross_entropy(net(x, student_params[-1]), labels[schedule[k].to(labels.device)])
        grad = torch.autograd.grad(ce, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - lr * grad)
    param_loss = F.mse_loss(student_params[-1], target, reduction="sum")
    param_dist = F.mse_loss(start, target, reduction="sum")
    loss = param_loss / param_dist
    loss.backward()
    return float(loss.detach()), images.grad, lr.grad


def reference(args) -> None:
    """Same work item: our standard and memory-saving unrolls vs the reference-style one, in one process."""
    device = torch.device(args.device)
    steps = args.reference_steps
    with tempfile.TemporaryDirectory() as tmp:
        model, store, state = make_setup(Path(tmp) / "store", device)
        ours = {"standard": make_matcher(store, model, device, steps, False),
                "memory_saving": make_matcher(store, model, device, steps, True)}
        config, net, augment = ours["standard"].config, Rebound(model), DSA()
        runs = {"reference_style": lambda: reference_style(net, store, state, config, augment, ITEM),
                **{f"ours_{k}": (lambda m=m: _as_tuple(m.contribution(state, ITEM))) for k, m in ours.items()}}
        seconds = {name: [] for name in runs}
        results = {}
        # Interleaved rounds, so background load hits every variant alike; round 0 is a warm-up (one-time costs).
        for round_ in range(args.reference_repeats + 1):
            for name, fn in runs.items():
                s, results[name] = timed(fn, device)
                if round_ > 0:
                    seconds[name].append(s)
    base = statistics.median(seconds["reference_style"])
    ref_loss, ref_grad, ref_lr = results["reference_style"]
    rows = []
    for name, times in seconds.items():
        loss, grad, grad_lr = results[name]
        rows.append({"unroll": name, "seconds": statistics.median(times), "all_seconds": times,
                     "time_over_reference": statistics.median(times) / base,
                     "loss_rel_diff_vs_reference": abs(loss - ref_loss) / abs(ref_loss),
                     "grad_images_max_rel_diff": float((grad - ref_grad).abs().max() / ref_grad.abs().max()),
                     "grad_images_cosine": float(F.cosine_similarity(grad.flatten().double(),
                                                                     ref_grad.flatten().double(), dim=0)),
                     "grad_lr_rel_diff": float((grad_lr - ref_lr).abs() / ref_lr.abs())})
    print(f"{'unroll':<22} {'s/iter':>8} {'vs ref':>7} {'grad max diff':>14} {'grad cos':>10}")
    for r in rows:
        print(f"{r['unroll']:<22} {r['seconds']:>8.2f} {r['time_over_reference']:>6.2f}x "
              f"{r['grad_images_max_rel_diff']:>14.1e} {r['grad_images_cosine']:>10.6f}")
    record(args, "reference", {"rows": rows, "syn_steps": steps, "repeats": args.reference_repeats,
                               "what": "one MTT iteration, same work item, DSA replay and batches; reference_style = "
                                       "module whose parameters are re-bound to views of one flat tensor every step, "
                                       "list of student params, create_graph, loss.backward(); timings interleaved "
                                       "after one warm-up round; float32, so memory-saving differs from the others "
                                       "by round-off of the second-order unroll (in float64 the two modes agree to "
                                       "~1e-15, and float32 standard itself differs from float64 by the same ~1e-2 "
                                       "max-relative, cosine 0.99997, at 10 steps)"})


def _as_tuple(c):
    return c.loss, c.grad_images, c.grad_lr


# ---------------------------------------------------------------------------- (3) trajectory storage dtype


def dtype_effect(args) -> None:
    """Same work item with the expert stored as float32 / float16 / bfloat16: loss and image-gradient agreement."""
    device = torch.device(args.device)
    rows, reference_c = [], None
    for drift in args.drifts:
        for store_dtype in ("float32", "float16", "bfloat16"):
            with tempfile.TemporaryDirectory() as tmp:
                model, store, state = make_setup(Path(tmp) / "store", device, store_dtype, drift)
                c = make_matcher(store, model, device, args.dtype_steps, False).contribution(state, ITEM)
            if store_dtype == "float32":
                reference_c = c
            g, g32 = c.grad_images.flatten().double(), reference_c.grad_images.flatten().double()
            rows.append({"drift_per_epoch": drift, "store_dtype": store_dtype, "loss": c.loss,
                         "loss_rel_diff": abs(c.loss - reference_c.loss) / abs(reference_c.loss),
                         "grad_images_cosine": float(F.cosine_similarity(g, g32, dim=0)),
                         "grad_images_norm_ratio": float(g.norm() / g32.norm()),
                         "grad_lr_rel_diff": float((c.grad_lr - reference_c.grad_lr).abs()
                                                   / reference_c.grad_lr.abs())})
    print(f"{'drift':>6} {'dtype':>9} {'loss':>10} {'loss rel diff':>14} {'grad cos':>10} {'lr-grad diff':>13}")
    for r in rows:
        print(f"{r['drift_per_epoch']:>6} {r['store_dtype']:>9} {r['loss']:>10.6f} {r['loss_rel_diff']:>14.2e} "
              f"{r['grad_images_cosine']:>10.6f} {r['grad_lr_rel_diff']:>13.2e}")
    record(args, "dtype", {"rows": rows, "syn_steps": args.dtype_steps,
                           "what": "one work item (start epoch 1, expert_epochs 2), standard unroll; the same float32 "
                                   "random-walk trajectory stored in each dtype; drift = per-epoch move of each "
                                   "parameter tensor as a fraction of its norm (a random, not a trained, trajectory)"})


# ---------------------------------------------------------------------------- main


def record(args, part: str, data: dict) -> None:
    """Merge one part's results into the JSON file, under the device kind, with provenance."""
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    results.setdefault(device.type, {})[part] = {
        **data, "device": name, "threads": args.threads or torch.get_num_threads(), "seed": SEED,
        "config": {k: v for k, v in vars(args).items() if k != "child"}, "versions": versions(), "measured": now()}
    write_json(OUT, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "scaling", "reference", "dtype"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 on CPU, where the nets here gain little from a second "
                             "shared core and threads fight other processes; ignored on CUDA)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations per (mode, steps); "
                        "default 1 on CPU, 3 on CUDA")
    parser.add_argument("--repeat-until", type=int, default=40, help="only syn_steps up to this get --repeats")
    parser.add_argument("--max-memory-mib", type=float, default=None,
                        help="skip a standard-mode run whose extrapolated peak exceeds this "
                             "(default: 80%% of available memory)")
    parser.add_argument("--reference-steps", type=int, default=10)
    parser.add_argument("--reference-repeats", type=int, default=None, help="default 2 on CPU, 3 on CUDA")
    parser.add_argument("--dtype-steps", type=int, default=10)
    parser.add_argument("--drifts", type=float, nargs="+", default=[0.02])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU")
    if not cuda:
        args.threads = args.threads or 1
        torch.set_num_threads(args.threads)
    else:
        args.threads = None
    args.repeats = args.repeats or (3 if cuda else 1)
    args.reference_repeats = args.reference_repeats or (3 if cuda else 2)
    if args.max_memory_mib is None:
        args.max_memory_mib = 0.8 * (torch.cuda.mem_get_info()[0] if cuda else _available_bytes()) / 2**20
    parts = {"scaling": scaling, "reference": reference, "dtype": dtype_effect}
    for name, fn in parts.items():
        if args.part in ("all", name):
            print(f"== {name}")
            fn(args)


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * 2**30


if __name__ == "__main__":
    main()
