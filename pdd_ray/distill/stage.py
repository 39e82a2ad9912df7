"""Distil one PDD stage: optimise S_i (and its lr) against a matcher, conditioned on the frozen U_{i-1}.

The loop, top to bottom:
    plan work items -> sum their contributions -> skip if non-finite -> SGD step
    -> keep lr positive -> matcher's between-iteration work
    -> every ``eval_every``: validation accuracy, keep the best iterate
    -> every ``checkpoint_every``: checkpoint (resume loses at most that many iterations)

A deferred validator (``validate.deferred``, e.g. Ray tasks) is handed each candidate
and the loop goes on; scores are taken in iteration order as they arrive, so the
best iterate and the history are the in-process check's. Candidates still being
scored are saved in the checkpoint and submitted again on resume.

With data-parallel workers (``comm``), every worker runs this same loop on the same
state: each computes the contributions of its share of the work items, one
all-reduce sums them, and every worker applies the identical update. Rank 0 alone
validates (the accuracy is broadcast, so all agree on the best iterate) and writes
checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from pdd_ray.distill.base import SyntheticState, combine
from pdd_ray.distill.checkpoint import load_checkpoint, optimizer_tensors, restore_optimizer, save_checkpoint
from pdd_ray.errors import UserError
from pdd_ray.parallel.comm import LocalComm, all_reduce_contribution, zero_contribution
from pdd_ray.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class StageSettings:
    """How one stage's optimisation runs (taken from the run config by the driver)."""

    iterations: int
    lr_img: float
    lr_lr: float | None  # None: the lr is not learned (gradient matching)
    eval_every: int
    checkpoint_every: int
    lr_min: float = 1e-6
    seed: int = 0


@dataclass
class StageOutcome:
    """The chosen (best-on-validation) iterate and what happened on the way."""

    images: torch.Tensor
    lr: float | None
    best_iteration: int
    best_val_accuracy: float
    skipped_nonfinite: int
    lr_clamped: int
    history: list[dict] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)  # iterations this stage was resumed from


class _Progress:
    """Mutable loop state: what a checkpoint must hold besides tensors."""

    def __init__(self, state: SyntheticState):
        self.iteration = 0
        self.best = (state.images.detach().clone(), _lr_value(state), -1, float("-inf"))
        self.skipped = 0
        self.clamped = 0
        self.history: list[dict] = []
        self.resumed_at: list[int] = []
        self.pending: list[tuple[int, torch.Tensor, float | None, object]] = []  # (it, images, lr, check)


def distill_stage(state: SyntheticState, matcher, settings: StageSettings,
                  validate: Callable[[torch.Tensor, float | None], float], checkpoint_path: Path,
                  on_iteration: Callable[[int], None] | None = None, progress: bool = True,
                  desc: str = "stage", fingerprint: str = "",
                  on_validation: Callable[[int, float], None] | None = None, comm: LocalComm | None = None,
                  resume_from: Path | None = None,
                  on_checkpoint: Callable[[int, Path], None] | None = None,
                  on_step: Callable[[int, dict], None] | None = None) -> StageOutcome:
    """Run (or resume) one stage and return its best iterate by validation accuracy.

    ``on_iteration(it)`` is called after every iteration, ``on_validation(it, accuracy)``
    after every validation check (what a Tune scheduler watches), ``on_checkpoint(it, path)``
    on every worker after rank 0 wrote a checkpoint, ``on_step(it, values)`` after every iteration
    with its matching loss, learned lr and skipped-update count (what trackers log). ``resume_from`` (default
    ``checkpoint_path``) is the checkpoint to continue from, if it exists.
    """
    comm = comm or LocalComm()
    opt_img = torch.optim.SGD([state.images], lr=settings.lr_img, momentum=0.5)
    opt_lr = torch.optim.SGD([state.lr], lr=settings.lr_lr, momentum=0.5) if settings.lr_lr is not None else None
    generator = torch.Generator().manual_seed(settings.seed)
    loop = _Progress(state)
    resume_from = checkpoint_path if resume_from is None else Path(resume_from)
    if resume_from.is_file():
        _restore(resume_from, state, matcher, opt_img, opt_lr, generator, loop, fingerprint)
    _check_workers_agree(comm, loop.iteration)
    deferred = getattr(validate, "deferred", False) and comm.world_size == 1
    loop.pending = [(it, images, lr, validate.submit(images, lr) if deferred else None)
                    for it, images, lr, _ in loop.pending]  # restored from a checkpoint: score them again
    if not deferred:
        _collect(loop, on_validation, wait=True, validate=validate)
    if loop.iteration == 0 and not loop.history and not loop.pending:
        _validate(state, validate, loop, 0, on_validation, comm)
    bar = progress_bar(total=settings.iterations, initial=loop.iteration, desc=desc,
                       disable=not progress or comm.rank != 0)
    while loop.iteration < settings.iterations:
        loss = _step(state, matcher, opt_img, opt_lr, generator, loop, settings, comm)
        loop.iteration += 1
        it = loop.iteration
        if it % settings.eval_every == 0 or it == settings.iterations:
            _validate(state, validate, loop, it, on_validation, comm)
        # The last checkpoint holds the stage's outcome: every check must be in it.
        _collect(loop, on_validation, wait=it == settings.iterations)
        if it % settings.checkpoint_every == 0 or it == settings.iterations:
            if comm.rank == 0:
                _save(checkpoint_path, state, matcher, opt_img, opt_lr, generator, loop, fingerprint)
            if on_checkpoint is not None:
                on_checkpoint(it, checkpoint_path)
        bar.set_postfix(loss=f"{loss:.4f}", best_val=f"{loop.best[3]:.3f}",
                        lr=f"{_lr_value(state):.2e}" if state.lr is not None else "-")
        bar.update(1)
        if on_step is not None:
            on_step(it, {"loss": loss, "lr": _lr_value(state), "skipped_nonfinite": loop.skipped})
        if on_iteration is not None:
            on_iteration(it)
    _collect(loop, on_validation, wait=True)  # a resumed, already finished stage may still hold some
    bar.close()
    images, lr, best_it, best_acc = loop.best
    return StageOutcome(images, lr, best_it, best_acc, loop.skipped, loop.clamped, loop.history, loop.resumed_at)


def _check_workers_agree(comm, iteration: int) -> None:
    """Every worker must start from the same iteration, or the all-reduces would mix different states."""
    if comm.world_size == 1:
        return
    first = comm.broadcast_float(float(iteration))
    differs = torch.tensor([0.0 if first == iteration else 1.0])
    if float(comm.all_reduce_(differs)) > 0:  # every rank learns it, so every rank stops (no hang)
        raise UserError(f"workers resumed from different checkpoints (rank 0 at iteration {int(first)}, rank "
                        f"{comm.rank} at {iteration}): out= must be one filesystem every worker sees")


def _lr_value(state) -> float | None:
    return None if state.lr is None else float(state.lr.detach())


def _step(state, matcher, opt_img, opt_lr, generator, loop, settings, comm) -> float:
    items = matcher.plan(loop.iteration, generator)  # the same list on every worker (same generator state)
    # A batch-sharding matcher splits inside each item, so every worker takes every item.
    mine = items if getattr(matcher, "shards_batch", False) else comm.share(items)
    local = combine(matcher.contribution(state, item) for item in mine) if mine \
        else zero_contribution(state.images, state.lr)
    total = all_reduce_contribution(local, comm)
    if not total.finite:
        # A NaN/inf step would poison the images for good: skip it, count it, say so.
        loop.skipped += 1
        log.warning("iteration %d: non-finite matching loss/gradient, update skipped (%d so far)",
                    loop.iteration, loop.skipped)
    else:
        state.images.grad = total.grad_images.to(state.images.device)
        opt_img.step()
        state.images.grad = None
        if opt_lr is not None and total.grad_lr is not None:
            state.lr.grad = total.grad_lr.reshape(state.lr.shape).to(state.lr.device)
            opt_lr.step()
            state.lr.grad = None
            if _lr_value(state) < settings.lr_min:  # a negative learned lr makes training diverge
                with torch.no_grad():
                    state.lr.clamp_(min=settings.lr_min)
                loop.clamped += 1
    matcher.after_iteration(state, loop.iteration, generator)
    return total.loss


def _validate(state, validate, loop, iteration: int, on_validation=None, comm=None) -> None:
    lr = _lr_value(state)
    comm = comm or LocalComm()
    if getattr(validate, "deferred", False) and comm.world_size == 1:
        images = state.images.detach().clone()
        loop.pending.append((iteration, images, lr, validate.submit(images, lr)))
        return
    # One worker trains the validation network; broadcasting its number keeps every worker's best identical.
    accuracy = comm.broadcast_float(validate(state.images.detach(), lr) if comm.rank == 0 else None)
    _record(loop, iteration, state.images.detach(), lr, accuracy, on_validation)


def _record(loop, iteration: int, images: torch.Tensor, lr, accuracy: float, on_validation=None) -> None:
    loop.history.append({"iteration": iteration, "val_accuracy": accuracy, "lr": lr})
    if accuracy > loop.best[3]:
        loop.best = (images.clone(), lr, iteration, accuracy)
    if on_validation is not None:
        on_validation(iteration, accuracy)


def _collect(loop, on_validation, wait: bool, validate=None) -> None:
    """Record the deferred checks that are done, oldest first (all of them when ``wait``).

    ``validate``: score restored candidates here, in process (a non-deferred validator).
    """
    while loop.pending and (wait or loop.pending[0][3].ready()):
        iteration, images, lr, check = loop.pending.pop(0)
        accuracy = check.result() if check is not None else validate(images, lr)
        _record(loop, iteration, images, lr, accuracy, on_validation)


def _save(path, state, matcher, opt_img, opt_lr, generator, loop, fingerprint) -> None:
    tensors = {"images": state.images, "best_images": loop.best[0], "rng": generator.get_state(),
               **optimizer_tensors("opt_img", opt_img)}
    if state.lr is not None:
        tensors["lr"] = state.lr.reshape(1)
        tensors.update(optimizer_tensors("opt_lr", opt_lr))
    matcher_state = matcher.state_tensors() if hasattr(matcher, "state_tensors") else {}
    tensors.update({f"matcher.{k}": v for k, v in matcher_state.items()})
    tensors.update({f"pending.{k}": images for k, (_, images, _, _) in enumerate(loop.pending)})
    meta = {"iteration": loop.iteration, "best_lr": loop.best[1], "best_iteration": loop.best[2],
            "best_val_accuracy": loop.best[3], "skipped": loop.skipped, "clamped": loop.clamped,
            "history": loop.history, "resumed_at": loop.resumed_at, "fingerprint": fingerprint,
            "pending": [{"iteration": it, "lr": lr} for it, _, lr, _ in loop.pending]}
    save_checkpoint(path, tensors, meta)


def check_resumable(path: Path, fingerprint: str) -> dict:
    """The checkpoint's metadata, or a UserError when another config or other earlier stages wrote it."""
    _, meta = load_checkpoint(path)
    _check_fingerprint(path, meta, fingerprint)
    return meta


def _check_fingerprint(path, meta: dict, fingerprint: str) -> None:
    if meta.get("fingerprint") != fingerprint:
        raise UserError(f"checkpoint {path} was written by a different config or different earlier stages; "
                        "delete it (or use another out=) to restart this stage")


def outcome_from_checkpoint(path: Path) -> StageOutcome:
    """The stage outcome stored in a finished stage's last checkpoint (how parallel runs hand back results)."""
    tensors, meta = load_checkpoint(path)
    return StageOutcome(tensors["best_images"], meta["best_lr"], meta["best_iteration"], meta["best_val_accuracy"],
                        meta["skipped"], meta["clamped"], meta["history"], meta.get("resumed_at", []))


def _restore(path, state, matcher, opt_img, opt_lr, generator, loop, fingerprint) -> None:
    tensors, meta = load_checkpoint(path)
    _check_fingerprint(path, meta, fingerprint)
    with torch.no_grad():
        state.images.copy_(tensors["images"])
        if state.lr is not None:
            state.lr.copy_(tensors["lr"].reshape(state.lr.shape))
    restore_optimizer("opt_img", opt_img, tensors)
    if opt_lr is not None:
        restore_optimizer("opt_lr", opt_lr, tensors)
    generator.set_state(tensors["rng"])
    matcher_state = {k[len("matcher."):]: v for k, v in tensors.items() if k.startswith("matcher.")}
    if matcher_state and hasattr(matcher, "load_state_tensors"):
        matcher.load_state_tensors(matcher_state)
    loop.iteration = meta["iteration"]
    loop.best = (tensors["best_images"], meta["best_lr"], meta["best_iteration"], meta["best_val_accuracy"])
    loop.skipped, loop.clamped, loop.history = meta["skipped"], meta["clamped"], meta["history"]
    loop.resumed_at = meta.get("resumed_at", []) + [loop.iteration]
    loop.pending = [(p["iteration"], tensors[f"pending.{k}"].to(state.images.device), p["lr"], None)
                    for k, p in enumerate(meta.get("pending", []))]
    log.info("resumed %s at iteration %d", path, loop.iteration)


__all__ = ["StageSettings", "StageOutcome", "distill_stage", "check_resumable", "outcome_from_checkpoint"]
