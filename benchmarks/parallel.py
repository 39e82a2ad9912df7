"""Data-parallel matching: iterations per minute with 1 vs N workers, the communication share, memory per worker.

    python benchmarks/parallel.py                          # CPU: 1 vs 2 gloo workers (this machine: 2 cores)
    python benchmarks/parallel.py --device cuda --workers 1 2 4 8   # GPUs: 1 vs N NCCL workers, one GPU each

Each worker runs the real stage loop (``distill_stage`` with a ``TorchDistComm``) in its own
process, as a Ray Train worker does, started by ``pdd_ray.parallel.local.run_process_group``
so Ray's start-up seconds do not blur the per-iteration figures. Cases:

* mtt-items:  MTT, 2 trajectories per iteration dealt over the workers (standard unroll);
* mtt-batch:  MTT, 1 trajectory, every minibatch sharded over the workers (memory-saving unroll);
* idc-items:  IDC gradient matching, the 10 classes dealt over the workers.

Setting: ConvNet-3 (width 64) on Fashion-MNIST-shaped data (1x28x28, 10 classes), IPC 10 per
stage (100 images), batch_syn 100, syn_steps 10, DSA on, random-walk expert trajectories,
random "real" images for gradient matching. "comm share" is the time a worker spends in
all-reduce/broadcast calls (transfer plus waiting for the slower worker) over its iteration
time. "work MiB" is the peak resident memory a worker gains while iterating (CPU: ru_maxrss
growth; CUDA: max_memory_allocated). Results merge into benchmarks/results/parallel.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from distill import random_walk  # noqa: E402  (shared benchmark setup: random-walk expert trajectories)

from pdd_ray.augment.dsa import DSA  # noqa: E402
from pdd_ray.data.splits import LabeledImages  # noqa: E402
from pdd_ray.distill.base import SyntheticState  # noqa: E402
from pdd_ray.distill.gradient_matching import PRESETS, GradientMatcher  # noqa: E402
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher  # noqa: E402
from pdd_ray.distill.stage import StageSettings, distill_stage  # noqa: E402
from pdd_ray.models import FlatForward, ParamLayout, create_model  # noqa: E402
from pdd_ray.parallel.local import run_process_group  # noqa: E402
from pdd_ray.provenance import now, versions, write_json  # noqa: E402
from pdd_ray.trajectories import TrajectoryStore  # noqa: E402

OUT = Path(__file__).parent / "results" / "parallel.json"
SEED = 0
IPC, CLASSES, SIZE, WIDTH, SYN_STEPS = 10, 10, 28, 64, 10
CASES = ("mtt-items", "mtt-batch", "idc-items")


def make_model(device) -> torch.nn.Module:
    """The benchmark's ConvNet-3, seeded."""
    torch.manual_seed(SEED)
    return create_model("convnet", 1, CLASSES, SIZE, width=WIDTH, depth=3).to(device)


def make_store(directory: Path) -> None:
    """Two random-walk experts (5 snapshots each) for the width-64 ConvNet."""
    model = make_model("cpu")
    layout = ParamLayout.of(model)
    store = TrajectoryStore.create(directory, dataset="fashion_mnist", preprocessing={}, model={"width": WIDTH},
                                   layout=layout, recipe={}, num_snapshots=5)
    for expert in range(2):
        store.write_expert(expert, random_walk(model, layout, epochs=4, drift=0.02), {})


def make_state(device, lr: bool) -> SyntheticState:
    """An IPC-10 synthetic set of random images (and a learnable lr for MTT)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    images = torch.randn(IPC * CLASSES, 1, SIZE, SIZE, generator=gen).to(device).requires_grad_(True)
    return SyntheticState(torch.empty(0, 1, SIZE, SIZE, device=device), torch.empty(0, dtype=torch.long, device=device),
                          images, torch.arange(CLASSES).repeat_interleave(IPC).to(device),
                          torch.tensor(0.01, device=device).requires_grad_(True) if lr else None)


def make_matcher(case: str, store_dir: str, comm, device):
    """The matcher of ``case``, wired to the worker's communicator."""
    if case == "idc-items":
        gen = torch.Generator().manual_seed(SEED + 2)
        labels = torch.arange(CLASSES).repeat_interleave(200)
        real = LabeledImages(torch.randn(len(labels), 1, SIZE, SIZE, generator=gen), labels, CLASSES)
        return GradientMatcher(PRESETS["idc"], real, lambda: make_model(device), DSA(), device, seed=SEED, comm=comm)
    batch = case == "mtt-batch"
    config = MTTConfig(syn_steps=SYN_STEPS, expert_epochs=2, max_start_epoch=2, batch_syn=IPC * CLASSES,
                       trajectories_per_iteration=1 if batch else 2, memory_saving=batch)
    model = make_model(device)
    return MTTMatcher(config, TrajectoryStore.open(store_dir, layout=None), FlatForward(model), DSA(), device,
                      comm=comm, shard_batch=batch)


def worker(comm, case: str, store_dir: str, iterations: int, checkpoint: str) -> dict:
    """One worker's timed stage: seconds per iteration (after a warm-up one), comm seconds, memory growth."""
    device = comm.device if hasattr(comm, "device") else torch.device("cpu")
    matcher = make_matcher(case, store_dir, comm, device)
    state = make_state(device, lr=case.startswith("mtt"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _memory(device)
    marks: list[tuple[float, float]] = []

    def mark(_iteration: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks.append((time.perf_counter(), comm.seconds))

    settings = StageSettings(iterations=iterations + 1, lr_img=100.0, lr_lr=1e-5 if state.lr is not None else None,
                             eval_every=10**6, checkpoint_every=10**6, seed=SEED)
    distill_stage(state, matcher, settings, validate=lambda images, lr: 0.0, checkpoint_path=Path(checkpoint),
                  on_iteration=mark, progress=False, comm=comm)
    seconds = marks[-1][0] - marks[0][0]
    return {"seconds_per_iteration": seconds / iterations, "comm_seconds": marks[-1][1] - marks[0][1],
            "work_mib": (_memory(device) - base) / 2**20}


def _memory(device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # kB on Linux


def measure(case: str, workers: int, threads: int, iterations: int, backend: str, directory: Path) -> dict:
    """Run ``case`` on ``workers`` processes of ``threads`` torch threads each; the slowest worker sets the pace."""
    ranks = run_process_group(workers, worker, case, str(directory / "store"), iterations,
                              str(directory / f"{case}-{workers}x{threads}.ckpt"), backend=backend, threads=threads)
    seconds = max(r["seconds_per_iteration"] for r in ranks)
    return {"case": case, "workers": workers, "threads_per_worker": threads,
            "iterations_per_minute": 60.0 / seconds, "seconds_per_iteration": seconds,
            "comm_share": max(r["comm_seconds"] / (r["seconds_per_iteration"] * iterations) for r in ranks),
            "work_mib_per_worker": max(r["work_mib"] for r in ranks)}


def summarize(rows: list[dict]) -> dict:
    """Speed-up and memory ratios of N workers against one worker with one thread, per case."""
    out = {}
    for case in CASES:
        base = next((r for r in rows if r["case"] == case and r["workers"] == 1 and r["threads_per_worker"] == 1), None)
        if base is None:
            continue
        for r in rows:
            if r["case"] == case and r is not base:
                key = f"{case}/{r['workers']}x{r['threads_per_worker']}"
                out[key] = {"speedup": r["iterations_per_minute"] / base["iterations_per_minute"],
                            "memory_per_worker_ratio": r["work_mib_per_worker"] / max(base["work_mib_per_worker"], 1e-9)}
    return out


def table(rows: list[dict], summary: dict) -> str:
    """The printed table: one row per (case, workers, threads)."""
    lines = [f"{'case':<10} {'workers':>7} {'threads':>7} {'it/min':>8} {'s/it':>7} {'comm %':>7} "
             f"{'work MiB':>9} {'speed-up':>9} {'mem ratio':>9}"]
    for r in rows:
        s = summary.get(f"{r['case']}/{r['workers']}x{r['threads_per_worker']}", {})
        speed = f"{s['speedup']:.2f}x" if s else "1.00x"
        mem = f"{s['memory_per_worker_ratio']:.2f}" if s else "1.00"
        lines.append(f"{r['case']:<10} {r['workers']:>7} {r['threads_per_worker']:>7} "
                     f"{r['iterations_per_minute']:>8.1f} {r['seconds_per_iteration']:>7.2f} "
                     f"{100 * r['comm_share']:>6.1f}% {r['work_mib_per_worker']:>9.1f} {speed:>9} {mem:>9}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default: 1 2)")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per run (after one warm-up)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    backend = "nccl" if args.device == "cuda" else "gloo"
    counts = args.workers or [1, 2]
    if args.device == "cuda" and max(counts) > torch.cuda.device_count():
        parser.error(f"--workers {max(counts)} needs that many GPUs; {torch.cuda.device_count()} visible")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdd-ray-bench-") as tmp:
        directory = Path(tmp)
        make_store(directory / "store")
        for case in args.cases:
            runs = [(n, 1) for n in counts]
            if args.device == "cpu":
                runs.insert(1, (1, max(counts)))  # the same cores used by torch threads in one process
            for workers, threads in runs:
                rows.append(measure(case, workers, threads, args.iterations, backend, directory))
                print(f"  {case}: {workers} worker(s) x {threads} thread(s): "
                      f"{rows[-1]['iterations_per_minute']:.1f} it/min", flush=True)
    record(args, rows)


def record(args, rows: list[dict]) -> None:
    """Merge this run's rows into the JSON file under the device kind, with config, seed and versions."""
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    # Rows of cases not run this time are kept, so one case can be re-measured alone.
    rerun = {r["case"] for r in rows}
    rows = [r for r in results.get(args.device, {}).get("rows", []) if r["case"] not in rerun] + rows
    rows.sort(key=lambda r: (CASES.index(r["case"]), r["workers"], r["threads_per_worker"]))
    summary = summarize(rows)
    results[args.device] = {
        "rows": rows, "summary": summary, "created": now(), "versions": versions(), "seed": SEED,
        "config": {"iterations": args.iterations, "ipc": IPC, "classes": CLASSES, "image": [1, SIZE, SIZE],
                   "model": f"convnet depth 3 width {WIDTH}", "syn_steps": SYN_STEPS, "batch_syn": IPC * CLASSES,
                   "dsa": True, "idc_preset": dict(PRESETS["idc"].__dict__)},
        "protocol": ("each worker runs distill_stage in its own process (torch.distributed "
                     f"{'nccl' if args.device == 'cuda' else 'gloo'}); one warm-up iteration, then the mean over "
                     "the timed iterations; the slowest worker sets it/min; comm share = seconds inside "
                     "all-reduce/broadcast over iteration seconds"),
    }
    write_json(OUT, results)
    print(table(rows, summary))
    print(f"results in {OUT}")


if __name__ == "__main__":
    main()
