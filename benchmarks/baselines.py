"""Coreset baselines on Fashion-MNIST with ConvNet-3, next to the published numbers.

    python benchmarks/baselines.py [--ipcs 1 10 50] [--runs 3] [--runs-at-50 2] [--epochs 500] [--schedule official]

One scoring network (trained once on the real training split) serves herding,
k-center and forgetting at every IPC. Each (method, IPC) is evaluated with the
protocol of pdd_ray.evaluation (``EvalProtocol``, union mode) and appended to the results JSON as soon as it
finishes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pdd_ray.config import AugmentConfig, BaselineConfig, DataConfig, EvalConfig, ModelConfig, to_dict
from pdd_ray.data.bundle import create_dataset
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.augment import make_augment
from pdd_ray.models import model_factory
from pdd_ray.provenance import now, versions, write_json
from pdd_ray.selection import SelectionContext, select
from pdd_ray.synset import Stage

PUBLISHED = {  # PDD_NOTES section 6 (Fashion-MNIST, ConvNet, %)
    "random": {1: 51.0, 10: 74.0, 50: 83.0}, "DC": {1: 70.5, 10: 82.3, 50: 83.6},
    "DSA": {1: 70.6, 10: 84.6, 50: 88.7}, "IDC": {1: 81.0, 10: 86.0, 50: 86.2}}
METHODS = ("random", "herding", "k-center", "forgetting")
OUT = Path(__file__).parent / "results" / "baselines.json"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results = _load_previous() if args.resume else {}
    config = BaselineConfig(data=DataConfig("fashion_mnist", val_size=5000), model=ModelConfig(width=128),
                            augment=AugmentConfig())
    device = torch.device("cpu")
    data = create_dataset(config.data)
    make_model = model_factory(config.model, data.image_shape, data.num_classes, device)
    context = SelectionContext(model_factory(config.model, data.image_shape, data.num_classes, device,
                                             width=args.scorer_width),
                               epochs=args.scorer_epochs, augment=make_augment(config.augment), seed=args.seed)
    protocol = EvalProtocol.from_config(EvalConfig(mode="union", runs=args.runs, epochs=args.epochs,
                                                   schedule=args.schedule, seed=args.seed),
                                        config.augment, config.model.arch)
    rows = results.setdefault("rows", {})
    for ipc in args.ipcs:
        for method in METHODS:
            key = f"{method}/ipc{ipc}"
            if key in rows:
                continue
            t0 = time.time()
            chosen = select(method, data.train, ipc, context)
            select_s = time.time() - t0
            stage = Stage(data.train.images[chosen], data.train.labels[chosen])
            runs = args.runs_at_50 if ipc >= 50 else args.runs
            t1 = time.time()
            result = protocol.evaluate([stage], (data.test.images, data.test.labels), make_model, runs=runs,
                                       progress=False)
            rows[key] = {"method": method, "ipc": ipc, "mean": 100 * result.mean, "std": 100 * result.std,
                         "runs": runs, "final": result.final, "epochs_per_net": protocol.total_epochs(1),
                         "protocol": protocol.describe(runs=runs), "select_seconds": select_s,
                         "seconds_per_eval_run": (time.time() - t1) / runs}
            print(f"{key:<20} {100 * result.mean:6.2f} ± {100 * result.std:.2f}  "
                  f"({rows[key]['seconds_per_eval_run']:.0f} s per evaluation run)", flush=True)
            _write(results, args, protocol)
    print_table(rows, args.ipcs)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--runs-at-50", type=int, default=2)
    p.add_argument("--epochs", type=int, default=500, help="eval.epochs (the official schedule trains one more)")
    p.add_argument("--schedule", default="official", choices=("official", "halfway"))
    p.add_argument("--scorer-width", type=int, default=64)
    p.add_argument("--scorer-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="keep rows already in the results file")
    return p.parse_args()


def _load_previous() -> dict:
    import json
    return json.loads(OUT.read_text()) if OUT.is_file() else {}


def _write(results: dict, args, protocol: EvalProtocol) -> None:
    results.update({
        "benchmark": "coreset baselines, Fashion-MNIST, ConvNet-3 (width 128, instance norm)",
        "protocol": (protocol.describe() + "; the selected real images form the one stage; test accuracy "
                     f"(IPC >= 50: {args.runs_at_50} runs)"),
        "selection": (f"herding / k-center use embeddings of a width-{args.scorer_width} ConvNet-3 trained "
                      f"{args.scorer_epochs} epochs on the training split (5000 held out for validation); forgetting "
                      "counts correct->wrong flips during that same training"),
        "config": to_dict(BaselineConfig()) | {"args": vars(args)}, "seed": args.seed,
        "published": PUBLISHED, "versions": versions(), "device": "cpu (2 cores)", "updated": now()})
    write_json(OUT, results)


def print_table(rows: dict, ipcs: list[int]) -> None:
    header = f"{'method':<12}" + "".join(f"{'IPC ' + str(i):>16}" for i in ipcs)
    print(header)
    for method in METHODS:
        cells = [rows.get(f"{method}/ipc{i}") for i in ipcs]
        print(f"{method:<12}" + "".join(f"{c['mean']:>9.1f} ± {c['std']:<4.1f}" if c else f"{'-':>16}" for c in cells))
    for name, pub in PUBLISHED.items():
        print(f"{name + ' (pub.)':<12}" + "".join(f"{pub.get(i, float('nan')):>16.1f}" for i in ipcs))


if __name__ == "__main__":
    main()
