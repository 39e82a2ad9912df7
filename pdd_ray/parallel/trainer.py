"""Distil one PDD stage on N data-parallel Ray Train workers (``parallel.workers > 1``).

What an iteration means with N workers: every worker holds the same synthetic set,
optimisers and RNG state, so all plan the same work items. With ``split: items``
worker r computes items r, r+N, ... (MTT trajectories, gradient-matching classes);
with ``split: batch`` every worker unrolls every trajectory on 1/N of each minibatch.
One all-reduce sums the gradients of the images and the learned lr, and every worker
applies the identical SGD step. So an iteration is the same iteration as in one
process: the same items, the same total gradient, the same update (to float rounding),
done in about 1/N of the time or memory. What is not split is replicated: the
gradient-matching network's training on real data between iterations, and (on rank 0
alone) the validation check.

Checkpoints: rank 0 writes the stage checkpoint (``OUT/stages/stage_<i>.ckpt``, which
a re-run resumes from) and reports a copy through ``ray.train.report``; when a worker
dies, Ray Train restarts the group (``parallel.max_failures`` times) and every worker
resumes from the last reported checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch

from pdd_ray.distill.checkpoint import load_checkpoint
from pdd_ray.distill.run_dir import RunDir
from pdd_ray.distill.stage import StageOutcome, check_resumable, distill_stage, outcome_from_checkpoint
from pdd_ray.errors import UserError, user_error_in
from pdd_ray.provenance import atomic_write
from pdd_ray.storage import is_uri

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "stage.ckpt"


def distill_stage_on_workers(config, finished: list, index: int, job, prepare, hooks=None) -> StageOutcome:
    """Run stage ``index`` on a Ray Train worker group and return its outcome (also left in ``job.checkpoint_path``).

    ``job`` is the driver's own ``StageJob`` for this stage: it supplies the fingerprint a
    checkpoint must match, checked here before any worker starts. ``prepare(config, data,
    finished, index, device, comm)`` builds the same job on every worker (the driver passes
    its own, so this runner never imports the driver). ``hooks`` (a ``StageHooks``): rank 0's
    iterations and validation checks, delivered here through a Ray queue while the group runs.
    """
    from pdd_ray.cluster import ray_session

    config = absolute_paths(config)
    checkpoint_path = RunDir.of(config).stage_checkpoint(index)
    if checkpoint_path.is_file():
        meta = check_resumable(checkpoint_path, job.fingerprint)
        if meta["iteration"] >= config.stages.iterations:
            return outcome_from_checkpoint(checkpoint_path)  # finished before the driver died
    with ray_session(config.address):
        with _HookRelay(hooks) as relay:
            result = _fit(config, finished, index, job, prepare, relay.queue)
    if result.checkpoint is None:
        raise RuntimeError(f"stage {index + 1}: the Ray Train run ended without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        # Rank 0 may have run on another node: the reported copy is the one the driver can always read.
        source = Path(directory) / CHECKPOINT_FILE
        atomic_write(checkpoint_path, lambda tmp: shutil.copyfile(source, tmp))
    return outcome_from_checkpoint(checkpoint_path)


def _fit(config, finished: list, index: int, job, prepare, events):
    """Run the worker group to the end of the stage; its ``ray.train.Result``."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    p = config.parallel
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"config": config, "finished": finished, "index": index, "prepare": prepare,
                           "events": events},
        scaling_config=ScalingConfig(num_workers=p.workers, use_gpu=p.use_gpu, resources_per_worker=_resources(p)),
        run_config=RunConfig(name=f"stage_{index + 1}_{job.fingerprint[:12]}", storage_path=_storage_path(config),
                             failure_config=FailureConfig(max_failures=p.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        torch_config=TorchConfig(backend=p.resolved_backend(), timeout_s=p.collective_timeout_s))
    check_capacity(p, ray.cluster_resources(), remote=bool(config.address or os.environ.get("RAY_ADDRESS")))
    try:
        return trainer.fit()
    except Exception as exc:  # a user mistake met on a worker reads as one line, not a Ray traceback
        raise user_error_in(exc) or exc


class _HookRelay:
    """A Ray queue rank 0 puts ("iteration", it, values) / ("validation", it, accuracy) events on, and a
    driver thread that calls the hooks with them, in order; the rest are drained when the group is done."""

    def __init__(self, hooks):
        self.hooks, self.queue, self._thread = hooks, None, None
        self._stop = threading.Event()

    def __enter__(self) -> "_HookRelay":
        hooks = self.hooks
        if hooks is None or (hooks.on_iteration is None and hooks.on_validation is None and hooks.on_step is None):
            return self
        from ray.util.queue import Queue
        self.queue = Queue(actor_options={"num_cpus": 0})
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.queue is None:
            return
        self._stop.set()
        self._thread.join()
        self._drain(block=False)
        self.queue.shutdown()

    def _pump(self) -> None:
        while not self._stop.is_set():
            self._drain(block=True)

    def _drain(self, block: bool) -> None:
        from ray.util.queue import Empty
        try:
            event = self.queue.get(block=block, timeout=0.2) if block else self.queue.get_nowait()
        except Empty:
            return
        while event is not None:
            self._deliver(event)
            try:
                event = self.queue.get_nowait()
            except Empty:
                event = None

    def _deliver(self, event: tuple) -> None:
        if event[0] == "iteration":
            if self.hooks.on_step is not None:
                self.hooks.on_step(event[1], event[2])
            if self.hooks.on_iteration is not None:
                self.hooks.on_iteration(event[1])
        elif event[0] == "validation" and self.hooks.on_validation is not None:
            self.hooks.on_validation(event[1], event[2])


def absolute_paths(config):
    """The config with ``out``, ``buffer`` and ``data.root`` absolute: workers do not share the driver's cwd."""
    def absolute(path):
        return path if path is None or is_uri(path) else str(Path(path).resolve())
    data = dataclasses.replace(config.data, root=absolute(config.data.root))
    parallel = dataclasses.replace(config.parallel, storage_path=absolute(config.parallel.storage_path))
    return dataclasses.replace(config, out=absolute(config.out), buffer=absolute(config.buffer), data=data,
                               parallel=parallel)


def check_capacity(p, cluster: dict, remote: bool) -> None:
    """Fail fast when the worker group can never be placed (Ray Train would wait forever).

    A remote cluster may autoscale, so there it is a warning; a local Ray cannot grow.
    """
    need = _resources(p)
    short = {k: (v * p.workers, cluster.get(k, 0.0)) for k, v in need.items() if v * p.workers > cluster.get(k, 0.0)}
    if not short:
        return
    what = ", ".join(f"{need:g} {kind} (the cluster has {have:g})" for kind, (need, have) in short.items())
    message = f"parallel.workers={p.workers} needs {what}"
    if not remote:
        raise UserError(f"{message}: lower parallel.workers or parallel.cpus_per_worker/gpus_per_worker")
    log.warning("%s; waiting for the cluster to scale up", message)


def check_before_compute(config) -> None:
    """Before experts are built: a worker group that a fresh local Ray on this machine could never place."""
    import ray

    from pdd_ray.cluster import resolve_address
    if config.parallel.workers < 2 or ray.is_initialized() or resolve_address(config.address) is not None:
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_capacity(config.parallel, {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}, remote=False)


def _resources(p) -> dict:
    resources = {"CPU": p.cpus_per_worker}
    if p.use_gpu:
        resources["GPU"] = p.gpus_per_worker
    return resources


def _storage_path(config) -> str:
    return config.parallel.storage_path or str(RunDir.of(config).ray_train)


# ---------------------------------------------------------------------------- on each worker


def worker_loop(loop_config: dict) -> None:
    """Body of every Ray Train worker: build the stage exactly as the driver would, then run it with a communicator."""
    import ray.train
    import ray.train.torch

    from pdd_ray.data.bundle import create_dataset
    from pdd_ray.parallel.comm import TorchDistComm

    config, finished, index = loop_config["config"], loop_config["finished"], loop_config["index"]
    device = ray.train.torch.get_device() if config.parallel.use_gpu else torch.device("cpu")
    from pdd_ray.runtime import configure_compute
    configure_compute(max(1, int(config.parallel.cpus_per_worker)))
    comm = TorchDistComm(device)
    data = create_dataset(config.data)
    job = loop_config["prepare"](config, data, finished, index, device, comm)
    with tempfile.TemporaryDirectory(prefix="pdd-ray-resume-") as scratch:
        resume_from = _latest(_resume_file(Path(scratch)), job.checkpoint_path)
        events = loop_config.get("events") if comm.rank == 0 else None  # a Ray queue: test it with ``is None``
        on_validation = (lambda it, acc: events.put(("validation", it, acc))) if events is not None else None
        on_step, on_iteration = _iteration_hooks(_fault_injection(config, index, comm), events)
        distill_stage(job.state, job.matcher, job.settings, job.validate, job.checkpoint_path,
                      on_iteration=on_iteration, progress=False,
                      desc=f"stage {index + 1}", fingerprint=job.fingerprint, comm=comm, resume_from=resume_from,
                      on_checkpoint=_reporter(comm, config, index),
                      on_validation=on_validation, on_step=on_step)


def _iteration_hooks(fault_injection, events):
    """The worker's ``on_step`` and ``on_iteration``: the test-only fault injection, then (rank 0) one
    driver hook event per iteration, carrying the step's values (loss, lr, skipped updates)."""
    last: dict = {}

    def on_step(iteration: int, values: dict) -> None:
        last.update(values)

    def on_iteration(iteration: int) -> None:
        fault_injection(iteration)
        if events is not None:
            events.put(("iteration", iteration, dict(last)))
    return on_step, on_iteration


def _latest(*paths: Path | None) -> Path:
    """The checkpoint furthest along (Ray Train's copy, or ``OUT/stages`` after a single-process run)."""
    found = [(load_checkpoint(p)[1]["iteration"], i, p) for i, p in enumerate(paths) if p is not None and p.is_file()]
    return max(found)[2] if found else paths[-1]


def _resume_file(scratch: Path) -> Path | None:
    """Ray Train's last reported checkpoint (after a worker-group restart), copied locally; None on a first start."""
    import ray.train
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        target = scratch / CHECKPOINT_FILE
        shutil.copyfile(Path(directory) / CHECKPOINT_FILE, target)
    log.info("resuming from Ray Train checkpoint %s", checkpoint.path)
    return target


def _reporter(comm, config, index: int):
    """``on_checkpoint`` hook: rank 0 reports a copy of its checkpoint, the others report metrics only."""
    import ray.train
    from ray.train import Checkpoint

    def report(iteration: int, path: Path) -> None:
        metrics = {"stage": index + 1, "iteration": iteration, "comm_seconds": comm.seconds}
        if comm.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="pdd-ray-ckpt-") as directory:
            shutil.copyfile(path, Path(directory) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))
        # Printed, not logged: Ray forwards worker stdout to the driver, which is the progress a user sees.
        print(f"pdd-ray: stage {index + 1}/{config.stages.num_stages}: iteration {iteration}/"
              f"{config.stages.iterations} checkpointed", flush=True)
    return report


def _fault_injection(config, index: int, comm):
    """Tests only: with PDD_RAY_FAIL_ONCE_DIR set, the last worker dies once per run, just after a first checkpoint."""
    from pdd_ray.experts.buffer import maybe_fail_once

    fail_at = config.stages.checkpoint_every + 1

    def hook(iteration: int) -> None:
        if iteration == fail_at and comm.rank == comm.world_size - 1:
            maybe_fail_once(str(Path(config.out) / "parallel"), comm.rank)
    return hook


__all__ = ["distill_stage_on_workers", "worker_loop", "absolute_paths", "check_capacity", "check_before_compute"]
