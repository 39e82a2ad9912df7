"""Expert buffers: parallel training throughput, snapshot reads vs pickles, and GPU sharing.

    python benchmarks/experts.py parallel   # (a) expert-epochs/min, 1 vs 2 parallel experts (CPU)
    python benchmarks/experts.py storage    # (b) one random snapshot: our store vs torch.load of a 10-expert file
    python benchmarks/experts.py gpu        # (c) 1, 2, 4, 8 experts sharing one GPU (needs CUDA)

Each part prints a table and merges its results into benchmarks/results/experts.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pdd_ray.config import load_config
from pdd_ray.provenance import now, versions, write_json

OUT = Path(__file__).parent / "results" / "experts.json"


def record(part: str, data: dict) -> None:
    """Merge one part's results into the JSON file with provenance."""
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results[part] = {**data, "versions": versions(), "measured": now()}
    write_json(OUT, results)


def parallel(args) -> None:
    """Wall time of the same 4 experts with 1 vs 2 running at once (local Ray, CPU)."""
    import ray

    from pdd_ray.experts.buffer import ExpertsConfig, build_buffer
    rows = []
    for label, ray_cpus, cpus_per_expert in (("1 expert at a time, 2 threads", 2, 2),
                                             ("1 expert at a time, 1 thread", 1, 1),
                                             ("2 experts at a time, 1 thread each", 2, 1)):
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(ExpertsConfig, None, [
                f"out={tmp}/buffer", f"num_experts={args.experts}", f"recipe.epochs={args.epochs}",
                f"model.width={args.width}", f"data.train_per_class={args.per_class}", "device=cpu",
                f"cpus_per_expert={cpus_per_expert}"])
            ray.init(num_cpus=ray_cpus, include_dashboard=False)
            start = time.perf_counter()
            build_buffer(config, progress=False)
            seconds = time.perf_counter() - start
            ray.shutdown()
        epochs = args.experts * args.epochs
        rows.append({"setting": label, "seconds": seconds, "expert_epochs_per_minute": 60 * epochs / seconds})
    base = rows[0]["expert_epochs_per_minute"]
    for row in rows:
        row["speedup_vs_first"] = row["expert_epochs_per_minute"] / base
    print(f"{'setting':<38} {'seconds':>8} {'ep/min':>8} {'speed-up':>9}")
    for row in rows:
        print(f"{row['setting']:<38} {row['seconds']:>8.1f} {row['expert_epochs_per_minute']:>8.2f} "
              f"{row['speedup_vs_first']:>8.2f}x")
    same_resources = rows[2]["expert_epochs_per_minute"] / rows[1]["expert_epochs_per_minute"]
    print(f"2 vs 1 parallel experts at 1 CPU each: {same_resources:.2f}x")
    record("parallel", {"rows": rows, "two_vs_one_parallel_same_cpus_per_expert": same_resources,
                        "config": vars(args), "machine": "2-core CPU, local Ray",
                        "what": f"{args.experts} experts x {args.epochs} epochs, ConvNet-3 width {args.width}, "
                                f"Fashion-MNIST {args.per_class} images/class, DSA, reference expert recipe; "
                                "wall time includes Ray start-up and data loading"})


def storage(args) -> None:
    """Read one random (expert, epoch) snapshot: Arrow store vs a 10-expert torch.save file."""
    from pdd_ray.models import ParamLayout, create_model
    from pdd_ray.trajectories import TrajectoryStore
    model = create_model("convnet", 1, 10, 28, width=128)
    layout = ParamLayout.of(model)
    gen = torch.Generator().manual_seed(0)
    trajectories = [torch.randn(args.snapshots, layout.numel, generator=gen) for _ in range(10)]
    rng = random.Random(0)
    picks = [(rng.randrange(10), rng.randrange(args.snapshots)) for _ in range(args.reads)]
    with tempfile.TemporaryDirectory() as tmp:
        pickle_path = Path(tmp) / "replay_buffer_0.pt"
        torch.save([[t[k].clone() for k in range(args.snapshots)] for t in trajectories], pickle_path)
        pickle_s = []
        for e, k in picks[: args.pickle_reads]:
            start = time.perf_counter()
            snapshot = torch.load(pickle_path, weights_only=True)[e][k]
            pickle_s.append(time.perf_counter() - start)
            assert torch.equal(snapshot, trajectories[e][k])
        rows = [{"format": "torch.save, 10 experts per file (reference)", "bytes": pickle_path.stat().st_size,
                 "median_read_ms": 1000 * statistics.median(pickle_s)}]
        for dtype in ("float32", "float16", "bfloat16"):
            store = TrajectoryStore.create(Path(tmp) / dtype, dataset="fashion_mnist", preprocessing={},
                                           model={"arch": "convnet"}, layout=layout, recipe={},
                                           num_snapshots=args.snapshots, dtype=dtype)
            for e, t in enumerate(trajectories):
                store.write_expert(e, t, {})
            store.close()
            fresh = TrajectoryStore.open(Path(tmp) / dtype)  # opened once, as a matching loop would
            times = []
            for e, k in picks:
                start = time.perf_counter()
                fresh.snapshot(e, k)
                times.append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in (Path(tmp) / dtype).glob("*.arrow"))
            rows.append({"format": f"pdd-ray Arrow store, {dtype}", "bytes": size,
                         "median_read_ms": 1000 * statistics.median(times)})
    for row in rows:
        row["read_speedup_vs_pickle"] = rows[0]["median_read_ms"] / row["median_read_ms"]
    print(f"{'format':<46} {'MiB':>8} {'read ms':>9} {'speed-up':>9}")
    for row in rows:
        print(f"{row['format']:<46} {row['bytes'] / 2**20:>8.1f} {row['median_read_ms']:>9.3f} "
              f"{row['read_speedup_vs_pickle']:>8.0f}x")
    record("storage", {"rows": rows, "config": vars(args),
                       "what": f"10 experts x {args.snapshots} snapshots of ConvNet-3 width 128 (1x28x28, "
                               f"{layout.numel} parameters); median over random (expert, epoch) reads; page cache warm"})


def gpu(args) -> None:
    """1, 2, 4, 8 experts sharing one GPU: throughput and memory per expert (run on the GPU machine)."""
    import ray

    from pdd_ray.experts.buffer import ExpertsConfig, build_buffer
    if not torch.cuda.is_available():
        raise SystemExit("the gpu part needs a CUDA GPU")
    rows = []
    for n in (1, 2, 4, 8):
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(ExpertsConfig, None, [
                f"out={tmp}/buffer", f"num_experts={n}", f"recipe.epochs={args.epochs}", "model.width=128",
                f"gpus_per_expert={1.0 / n}", "cpus_per_expert=1", "device=cuda"]
                + ([f"data.root={args.data_root}"] if args.data_root else []))
            ray.init(num_cpus=max(n, 2), num_gpus=1, include_dashboard=False)
            peak = _PeakGpuMemory()
            start = time.perf_counter()
            with peak:
                build_buffer(config, progress=False)
            seconds = time.perf_counter() - start
            ray.shutdown()
        rows.append({"experts_on_gpu": n, "seconds": seconds, "expert_epochs_per_minute": 60 * n * args.epochs / seconds,
                     "peak_device_memory_gib": peak.gib, "memory_per_expert_gib": peak.gib / n})
    for row in rows:
        row["speedup_vs_1"] = row["expert_epochs_per_minute"] / rows[0]["expert_epochs_per_minute"]
        print(row)
    record("gpu", {"rows": rows, "config": vars(args), "device": torch.cuda.get_device_name(0)})


class _PeakGpuMemory:
    """Polls device-wide used memory (all processes) in a thread; workers are separate processes."""

    def __enter__(self):
        import threading
        self.gib, self._stop = 0.0, threading.Event()
        free, total = torch.cuda.mem_get_info()
        self._baseline = total - free
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.05):
            free, total = torch.cuda.mem_get_info()
            self.gib = max(self.gib, (total - free - self._baseline) / 2**30)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["parallel", "storage", "gpu"])
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--snapshots", type=int, default=51)
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--pickle-reads", type=int, default=10)
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    {"parallel": parallel, "storage": storage, "gpu": gpu}[args.part](args)


if __name__ == "__main__":
    main()
