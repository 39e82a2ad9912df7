"""End to end at many stages: PDD + MTT, 10 stages x 2 IPC, on a fake Tiny-ImageNet (``scale.py e2e``).

A 200-class, 64x64 folder in Tiny-ImageNet's on-disk layout (wnids.txt, train/<wnid>/images/*.JPEG,
val/val_annotations.txt) with class-coloured images, so the networks have something to learn. The
run is killed with SIGKILL once ``--kill-after-stage`` stages are on disk and started again: the
second run must resume (finished stages read back, nothing redone). Then ``pdd-ray evaluate`` scores
the set in a process of its own, whose peak RSS is the final evaluation's host memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
method: mtt
seed: 0
device: cpu
stages: {{num_stages: {stages}, ipc: 2, iterations: 10, eval_every: 5, eval_epochs: 2, val_nets: 1,
          checkpoint_every: 5}}
mtt: {{syn_steps: 4, expert_epochs: 1, max_start_epoch: 2, batch_syn: 100, lr_img: 1000, memory_saving: true}}
experts: {{num_experts: 2, cpus_per_expert: 1, recipe: {{epochs: 4, transition_epochs: null, transition_steps: 20}}}}
data: {{dataset: tiny_imagenet, val_size: 400, download: false}}
model: {{arch: convnet, width: {width}, depth: 4}}
eval: {{runs: 2, epochs: 2}}
evaluate: false
"""


def write_fake_tiny_imagenet(root: Path, per_class: int = 12, val_per_class: int = 2, classes: int = 200) -> Path:
    """Tiny-ImageNet's layout with ``classes`` wnids of coloured-noise JPEGs (class = mean colour)."""
    from PIL import Image
    folder = root / "tiny-imagenet-200"
    if (folder / "val" / "val_annotations.txt").is_file():
        return folder
    rng = np.random.default_rng(0)
    wnids = [f"n{10_000_000 + c:08d}" for c in range(classes)]
    colours = rng.integers(30, 226, size=(classes, 3))
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tclass {c}\n" for c, w in enumerate(wnids)))

    def image(c: int) -> Image.Image:
        noise = rng.normal(0, 40, size=(64, 64, 3))
        return Image.fromarray(np.clip(colours[c] + noise, 0, 255).astype(np.uint8))

    for c, wnid in enumerate(wnids):
        (folder / "train" / wnid / "images").mkdir(parents=True, exist_ok=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(per_class):
            image(c).save(folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", quality=90)
    lines = []
    for c, wnid in enumerate(wnids):
        for k in range(val_per_class):
            name = f"val_{c * val_per_class + k}.JPEG"
            image(c).save(folder / "val" / "images" / name, quality=90)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


def _stages_done(out: Path) -> int:
    manifest = out / "synthetic" / "manifest.json"
    try:
        return len(json.loads(manifest.read_text()).get("stages", []))
    except (OSError, ValueError):
        return 0


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the run and every process of its session (the local Ray it started), nothing else."""
    sid = process.pid
    os.killpg(sid, signal.SIGKILL)  # the run itself is reaped by the caller (os.wait4)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _run(command: list[str], log: Path, kill_when=None) -> dict:
    """Run ``command`` in its own session; kill it when ``kill_when()`` turns true. Wall time, peak RSS, rc."""
    began = time.perf_counter()
    killed = False
    with open(log, "a") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and kill_when():
                _kill_session(process)
                killed = True
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.5)
    return {"seconds": time.perf_counter() - began, "killed": killed,
            "returncode": os.waitstatus_to_exitcode(status), "peak_rss_bytes": usage.ru_maxrss * 1024}


def run_e2e(args) -> dict:
    work = ROOT / "runs" / "scale_e2e"
    work.mkdir(parents=True, exist_ok=True)
    data_root = write_fake_tiny_imagenet(work / "data").parent
    out = work / f"run_w{args.width}_s{args.stages}"
    config = work / "config.yaml"
    config.write_text(CONFIG.format(stages=args.stages, width=args.width))
    log = work / "run.log"
    command = [sys.executable, "-m", "pdd_ray", "run", "--config", str(config), "--data-root", str(data_root),
               "--out", str(out)]
    fresh = _stages_done(out) == 0
    first = _run(command, log, kill_when=lambda: _stages_done(out) >= args.kill_after_stage) if fresh else None
    killed_at = _stages_done(out)
    print(f"first run: {first}; stages on disk: {killed_at}", flush=True)
    second = _run(command, log)
    print(f"resumed run: {second}", flush=True)
    evaluate = _run([sys.executable, "-m", "pdd_ray", "evaluate", str(out / "synthetic"), "--data-root",
                     str(data_root), "--runs", "2", "--epochs", "2", f"model.width={args.width}", "model.depth=4",
                     "augment.dsa=true"], log)
    print(f"final evaluation: {evaluate}", flush=True)
    from pdd_ray import synset as synset_io
    synset = synset_io.load(out / "synthetic")
    union_bytes = sum(s.images.numel() * s.images.element_size() for s in synset.stages)
    evaluation = json.loads((out / "synthetic" / "eval.json").read_text()) if (out / "synthetic" / "eval.json").is_file() \
        else None
    from pdd_ray.provenance import now, versions
    return {"stages": len(synset.stages), "ipc_per_stage": 2, "width": args.width, "killed_after_stages": killed_at,
            "first_run": first, "resumed_run": second, "final_evaluation_process": evaluate,
            "union_bytes": union_bytes, "resumed_at": [s.info.get("resumed_at") for s in synset.stages],
            "evaluation": evaluation, "config": config.read_text(), "seed": 0, "precision": "float32",
            "evaluation_protocol": "pdd-ray evaluate: progressive, 2 runs, eval.epochs 2, DSA (see eval.json)",
            "versions": versions(), "created": now()}
