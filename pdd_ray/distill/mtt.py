"""Matching Training Trajectories (MTT, Cazenavette et al. 2022) as a PDD base method.

One work item = one expert trajectory and start epoch t ~ U{0..max_start_epoch-1}
(numpy's ``randint(0, max_start_epoch)`` in the reference). The student starts at the
expert's parameters θ*_t, takes ``syn_steps`` SGD steps with the learnable lr on
(DSA-augmented) minibatches of the synthetic union, and the loss is how far it ends
from θ*_{t+M}, normalised by how far the expert itself moved:

    L = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²

Its gradient w.r.t. the new images and the lr is a derivative *through* the whole
unrolled training (second order). Two ways to get it, same numbers:

* standard: keep the graph of every step, one backward (memory grows with syn_steps);
* memory_saving: keep only θ_k per step, then walk the steps backwards recomputing
  one step's graph at a time (reverse-mode adjoint, hand-written checkpointing), so
  activation memory is that of a single step whatever syn_steps is.

Every random choice of an item (minibatch order, augmentation of step k) comes from
the item's seed, so a step can be replayed exactly, on any worker.

Batch sharding (``comm`` with ``shard_batch``): every worker unrolls the same item, but
each computes the cross-entropy gradient of its slice of every minibatch only. The
slices' gradients add up to the full one, so one all-reduce of a parameter-sized vector
per step (forward) and per step (backward) gives every worker the exact full-batch
trajectory while it holds the activations of 1/N of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pdd_ray.augment.dsa import DSA
from pdd_ray.distill.base import Contribution, SyntheticState
from pdd_ray.errors import UserError
from pdd_ray.models.functional import FlatForward
from pdd_ray.parallel.comm import has_batch_norm, shard_rows
from pdd_ray.precision import autocast
from pdd_ray.trajectories.store import TrajectoryStore, layout_difference

# A student step's update: (k, θ_k, live images, lr, create_graph) -> Δ_k, and θ_{k+1} = θ_k − Δ_k.
# With batch sharding Δ_k is this worker's share, and ``reduce`` sums the shares over workers.
StepFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
ReduceFn = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class MTTConfig:
    """MTT hyperparameters (names as in the reference code)."""

    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    # Student minibatch size. None (the reference default): classes x this stage's ipc, i.e. the
    # number of live images, drawn from the whole union (frozen + live). 0: the whole union each step.
    batch_syn: int | None = None
    lr_img: float = 1000.0  # used by the driver's optimiser, kept here for config completeness
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01  # initial learnable lr
    trajectories_per_iteration: int = 1
    memory_saving: bool = False
    # A buffer whose manifest lists an expert whose file is missing or truncated is refused; with this
    # set, such experts are left out and the report names them.
    skip_damaged_experts: bool = False

    def validate(self) -> None:
        """Raise UserError on non-positive counts or rates (batch_syn may be 0: the whole union)."""
        for name in ("syn_steps", "expert_epochs", "trajectories_per_iteration", "lr_img", "lr_lr", "lr_teacher"):
            if not getattr(self, name) > 0:
                raise UserError(f"mtt.{name} must be > 0, got {getattr(self, name)}")
        if self.max_start_epoch < 1:
            raise UserError(f"mtt.max_start_epoch must be >= 1 (start epochs are drawn from 0..max_start_epoch-1), "
                            f"got {self.max_start_epoch}")
        if self.batch_syn is not None and self.batch_syn < 0:
            raise UserError(f"mtt.batch_syn must be >= 1, 0 (whole union) or None (classes x ipc), "
                            f"got {self.batch_syn}")

    def student_batch(self, live: int, union: int) -> int:
        """The minibatch size for a stage with ``live`` new images in a union of ``union``."""
        if self.batch_syn is None:
            return min(live, union)
        if self.batch_syn == 0:
            return union
        return min(self.batch_syn, union)


@dataclass(frozen=True)
class MTTWorkItem:
    """One trajectory segment to match: expert id, start epoch t, and the seed of all its randomness."""

    expert: int
    start_epoch: int
    seed: int


# ---------------------------------------------------------------------------- replayable randomness


def batch_schedule(union_size: int, steps: int, batch: int | None, seed: int) -> list[torch.Tensor]:
    """Minibatch indices into the union for each step: chunks of a random permutation, reshuffled when used up.

    ``batch`` None or 0 means the whole union every step (``MTTConfig.student_batch``
    resolves the config's None to the live-image count before calling this).
    """
    batch = union_size if not batch else min(batch, union_size)
    generator = torch.Generator().manual_seed(seed)
    schedule: list[torch.Tensor] = []
    chunks: list[torch.Tensor] = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(union_size, generator=generator), batch))
        schedule.append(chunks.pop(0))
    return schedule


def gather_union(frozen: torch.Tensor, live: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of the union ``cat([frozen, live])`` without building the union.

    Union order as ``SyntheticState.union()``: frozen rows first, so an index means the same
    row in every replay. Frozen and live rows are gathered separately and put back in
    ``index`` order: a step costs its minibatch, not the union, and the backward pass
    scatters into a live-sized gradient only (no union-sized zero tensor).
    """
    is_live = index >= len(frozen)
    if not bool(is_live.any()):
        return frozen[index]
    if bool(is_live.all()):
        return live[index - len(frozen)]
    order = torch.cat([torch.nonzero(~is_live).squeeze(1), torch.nonzero(is_live).squeeze(1)])
    parts = torch.cat([frozen[index[~is_live]], live[index[is_live] - len(frozen)]])
    return parts[torch.argsort(order)]  # back to minibatch order


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for step ``step``'s augmentation: a function of (seed, step) only, so it can be replayed."""
    # SeedSequence mixes the pair well: nearby (seed, step) pairs give unrelated streams.
    mixed = int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


# ---------------------------------------------------------------------------- the two unrolls


def unroll_standard(step: StepFn, theta0: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
                    lr: torch.Tensor, num_steps: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and d loss/d (images, lr) with the whole unrolled graph kept: one backward."""
    # θ0 needs requires_grad only so each step can differentiate the CE w.r.t. θ; nobody asks for its gradient.
    theta = theta0.detach().requires_grad_(True)
    for k in range(num_steps):
        theta = theta - step(k, theta, images, lr, True)
    loss = scale * (theta - target).pow(2).sum() / (theta0 - target).pow(2).sum()
    g_images, g_lr = _grad(loss, images, lr)
    return loss.detach(), g_images, g_lr


def unroll_memory_saving(step: StepFn, theta0: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
                         lr: torch.Tensor, num_steps: int, scale: float, reduce: ReduceFn = _identity
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same result as ``unroll_standard``, keeping one P-vector per step instead of every step's graph.

    ``reduce`` sums a parameter-sized vector over batch-shard workers; the returned image
    and lr gradients are then this worker's share (they add up over workers).
    """
    # Forward: each step builds only the graph it needs for its own CE gradient and drops it.
    thetas = []
    theta = theta0.detach()
    for k in range(num_steps):
        thetas.append(theta)
        delta = step(k, theta.detach().requires_grad_(True), images.detach(), lr.detach(), False).detach()
        theta = theta - reduce(delta)
    denominator = (theta0 - target).pow(2).sum()
    loss = scale * (theta - target).pow(2).sum() / denominator
    # Backward: λ_k = dL/dθ_k. Recompute step k with its graph from the stored θ_k and the replayed
    # batch/augmentation; one vector-Jacobian product gives λ_k and this step's share of d/d images, d/d lr.
    adjoint = 2.0 * scale * (theta - target) / denominator
    g_images, g_lr = torch.zeros_like(images), torch.zeros_like(lr)
    for k in reversed(range(num_steps)):
        theta_k = thetas.pop().requires_grad_(True)  # popping frees θ_k once its step is done
        delta = step(k, theta_k, images, lr, True)
        # θ_{k+1} = θ_k − Σ_workers Δ: the identity part passes λ through, the Δ part is a VJP.
        d_theta, d_images, d_lr = _grad(delta, theta_k, images, lr, grad_outputs=adjoint)
        adjoint = adjoint - reduce(d_theta)
        g_images -= d_images
        g_lr -= d_lr
    return loss.detach(), g_images, g_lr


def _grad(output: torch.Tensor, *inputs: torch.Tensor, grad_outputs: torch.Tensor | None = None) -> list[torch.Tensor]:
    """torch.autograd.grad over the inputs that require grad; zeros for the rest (or when unused)."""
    wanted = [x for x in inputs if x.requires_grad]
    found = iter(torch.autograd.grad(output, wanted, grad_outputs=grad_outputs, allow_unused=True) if wanted else ())
    out = []
    for x in inputs:
        g = next(found) if x.requires_grad else None
        out.append(torch.zeros_like(x) if g is None else g)  # None: e.g. no live image was ever sampled
    return out


def _check_shardable(config: MTTConfig, forward: FlatForward) -> None:
    """Batch sharding is exact only for per-sample networks and with the memory-saving unroll."""
    if not config.memory_saving:
        raise UserError("parallel.split=batch needs mtt.memory_saving=true (the sharded unroll is the adjoint one)")
    if has_batch_norm(forward.module):
        raise UserError("parallel.split=batch needs a network without batch norm (its statistics span the batch); "
                        "use model.norm=instancenorm or parallel.split=items")


# ---------------------------------------------------------------------------- the matcher


class MTTMatcher:
    """MTT trajectory matching with conditioning on the frozen union (see the module docstring)."""

    def __init__(self, config: MTTConfig, store: TrajectoryStore, forward: FlatForward,
                 augment: DSA | None = None, device: torch.device | str = torch.device("cpu"),
                 comm=None, shard_batch: bool = False, precision: str = "fp32"):
        """``precision``: ``fp32`` or ``bf16`` (each student step's forward and cross-entropy under autocast;
        θ, images, lr, the unroll's sums and the loss stay fp32: ``pdd_ray.precision``)."""
        config.validate()
        autocast(precision, device)  # refuses an unresolved setting ("auto") here, not mid-iteration
        self.precision = precision
        self.config, self.store, self.forward, self.augment = config, store, forward, augment
        self.device = torch.device(device)
        self.comm = comm
        self.shards_batch = bool(shard_batch and comm is not None and comm.world_size > 1)
        if self.shards_batch:
            _check_shardable(config, forward)
        # Fixed at construction so plan() draws from the same list on every worker.
        self.experts = store.completed()
        self.skipped_experts = store.damaged()  # listed as complete, but the file is missing or truncated
        if self.skipped_experts and not config.skip_damaged_experts:
            raise UserError(f"expert(s) {', '.join(map(str, self.skipped_experts))} of {store.directory} are listed "
                            "as complete but their files are missing or truncated: rebuild them (pdd-ray experts "
                            "on that buffer retrains them) or set mtt.skip_damaged_experts=true to match without "
                            "them (the report lists them)")
        if not self.experts:
            raise UserError(f"trajectory store {store.directory} has no complete experts; train experts first")
        needed = config.max_start_epoch + config.expert_epochs + 1
        if store.num_snapshots < needed:
            raise UserError(f"MTT with max_start_epoch={config.max_start_epoch} and expert_epochs="
                            f"{config.expert_epochs} needs {needed} snapshots per expert (epochs 0.."
                            f"{needed - 1}); {store.directory} has {store.num_snapshots}. Lower max_start_epoch "
                            f"or train experts for {needed - 1} epochs")
        if forward.layout != store.layout:
            raise UserError(f"the student model's parameter layout does not fit the experts of {store.directory}: "
                            f"{layout_difference(store.layout, forward.layout)}; use the experts' model settings")

    def plan(self, iteration: int, generator: torch.Generator) -> list[MTTWorkItem]:
        """``trajectories_per_iteration`` items: expert uniform over the complete ones, t ~ U{0..max_start_epoch-1}."""
        items = []
        for _ in range(self.config.trajectories_per_iteration):
            expert = self.experts[int(torch.randint(len(self.experts), (1,), generator=generator))]
            start = int(torch.randint(self.config.max_start_epoch, (1,), generator=generator))
            seed = int(torch.randint(2**62, (1,), generator=generator))
            items.append(MTTWorkItem(expert, start, seed))
        return items

    def contribution(self, state: SyntheticState, item: MTTWorkItem) -> Contribution:
        """This item's loss share (1/trajectories_per_iteration of the normalised distance) and its gradients."""
        cfg = self.config
        dtype = state.images.dtype
        # Private leaves: gradients come back through torch.autograd.grad, the caller's tensors stay untouched.
        images = state.images.detach().to(self.device).requires_grad_(True)
        has_lr = state.lr is not None
        lr = (state.lr.detach().to(self.device, dtype) if has_lr
              else torch.tensor(cfg.lr_teacher, dtype=dtype, device=self.device)).requires_grad_(has_lr)
        frozen = state.frozen_images.detach().to(self.device, dtype)
        labels = torch.cat([state.frozen_labels, state.labels]).to(self.device)
        theta0 = self.store.snapshot(item.expert, item.start_epoch).to(self.device, dtype)
        target = self.store.snapshot(item.expert, item.start_epoch + cfg.expert_epochs).to(self.device, dtype)
        batch = cfg.student_batch(len(state.labels), len(labels))
        if self.shards_batch and batch < self.comm.world_size:
            raise UserError(f"parallel.split=batch with {self.comm.world_size} workers needs a student minibatch of "
                            f">= {self.comm.world_size} images; mtt.batch_syn gives {batch}")
        schedule = [idx.to(self.device) for idx in batch_schedule(len(labels), cfg.syn_steps, batch, item.seed)]

        def step(k: int, theta: torch.Tensor, live: torch.Tensor, lr: torch.Tensor, create_graph: bool) -> torch.Tensor:
            x = gather_union(frozen, live, schedule[k])
            y = labels[schedule[k]]
            if self.augment is not None:
                # Augment the whole minibatch, then slice: every shard sees exactly its part of the same draw.
                params = self.augment.sample(len(x), tuple(x.shape[-2:]), step_generator(item.seed, k))
                x = self.augment.apply(x, params)
            rows = self._my_rows(len(x))
            # Sum over my rows / full batch size: the shards' gradients add up to the full mean's.
            with autocast(self.precision, self.device):
                ce = F.cross_entropy(self.forward(x[rows], theta), y[rows], reduction="sum") / len(x)
            (g,) = torch.autograd.grad(ce, theta, create_graph=create_graph)
            return lr * g

        with torch.enable_grad():
            scale = 1.0 / cfg.trajectories_per_iteration
            if cfg.memory_saving:
                reduce = self._reduce if self.shards_batch else _identity
                loss, g_images, g_lr = unroll_memory_saving(step, theta0, target, images, lr, cfg.syn_steps, scale,
                                                            reduce)
            else:
                loss, g_images, g_lr = unroll_standard(step, theta0, target, images, lr, cfg.syn_steps, scale)
        if self.shards_batch:
            loss = loss / self.comm.world_size  # every worker holds the whole loss; the all-reduce adds N copies
        return Contribution(float(loss), g_images.to(state.images.device),
                            g_lr.to(state.lr.device, state.lr.dtype) if has_lr else None)

    def _my_rows(self, batch: int) -> slice:
        """This worker's contiguous slice of a minibatch (all of it without batch sharding)."""
        return shard_rows(batch, self.comm if self.shards_batch else None)

    def _reduce(self, vector: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce_(vector.detach().clone())

    def after_iteration(self, state: SyntheticState, iteration: int, generator: torch.Generator) -> None:
        """MTT has nothing to do between iterations."""
