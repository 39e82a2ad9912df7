"""MTT (Cazenavette et al. 2022) as a PDD base: trajectory matching against transition experts."""

from __future__ import annotations

from pdd_ray.distill.methods.base import BaseMethod, MatcherContext
from pdd_ray.distill.methods.registry import METHODS
from pdd_ray.errors import UserError
from pdd_ray.models import model_factory
from pdd_ray.precision import resolve_precision


class MTT(BaseMethod):
    """Unrolled student training with a learnable lr, matched to expert snapshots.

    Stage 1 matches experts trained from random init; stage i+1 matches the
    transition chain (``pdd_ray.distill.transitions``): expert k starts where
    expert k of stage i started, trained through the synthetic union U_i first.
    """

    name = "mtt"
    section = "mtt"
    needs_experts = True
    learns_lr = True
    shards_batch = True

    def lr_lr(self, config) -> float:
        return config.mtt.lr_lr

    def fingerprint(self, config) -> dict:
        """The mtt section, less ``skip_damaged_experts``: a no-op on an intact buffer, and runs begun before it
        existed must still resume (the report lists any expert it skipped)."""
        section = super().fingerprint(config)
        section["mtt"].pop("skip_damaged_experts", None)
        return section

    def initial_lr(self, config) -> float:
        return config.mtt.lr_teacher  # reset at every stage, as the reference does

    def check(self, config) -> None:
        config.mtt.validate()
        needed = config.mtt.max_start_epoch + config.mtt.expert_epochs + 1
        have = config.experts.recipe.num_snapshots
        if config.buffer is None and have < needed:
            raise UserError(f"experts keep {have} snapshots but matching needs {needed} "
                            f"(mtt.max_start_epoch + mtt.expert_epochs + 1): raise experts.recipe.epochs "
                            "(and store_epochs) or lower mtt.max_start_epoch")
        if config.device.startswith("cuda") and config.experts.gpus_per_expert == 0:
            raise UserError("device=cuda needs experts.gpus_per_expert > 0 (Ray hides GPUs from tasks without one)")
        if config.stages.forgetting_curriculum and config.buffer is None and not config.experts.track_forgetting:
            raise UserError("stages.forgetting_curriculum needs experts.track_forgetting=true "
                            "(the stage-1 experts count the forgetting events)")
        self._check_batch_split(config)

    @staticmethod
    def _check_batch_split(config) -> None:
        """``parallel.split=batch`` shards the student minibatch over workers: the adjoint unroll, enough rows."""
        p = config.parallel
        if p.split != "batch" or p.workers <= 1:
            return
        if not config.mtt.memory_saving:
            raise UserError("parallel.split=batch needs mtt.memory_saving=true (the sharded unroll is the adjoint one)")
        if 0 < _student_batch(config) < p.workers:
            raise UserError(f"parallel.split=batch with {p.workers} workers needs mtt.batch_syn >= {p.workers}")

    def before_stage(self, config, data, index: int, progress: bool, finished: list | None = None) -> None:
        from pdd_ray.distill.curriculum import stage_partition
        from pdd_ray.distill.transitions import chained, ensure_experts, warn_unread_epochs
        if index == 0:  # said when the run starts, not on every validation (a sweep validates each trial)
            warn_unread_epochs(config)
        # Chained experts of a forgetting curriculum train on their stage's partition.
        partition = stage_partition(config, data, index) if chained(config, index) else None
        ensure_experts(config, index, progress, partition, data=data, finished=finished)

    def build_matcher(self, ctx: MatcherContext):
        from pdd_ray.distill.mtt import MTTMatcher
        from pdd_ray.distill.transitions import expert_dir
        from pdd_ray.models import FlatForward
        from pdd_ray.trajectories import TrajectoryStore
        config, data = ctx.config, ctx.data
        model = model_factory(config.model, data.image_shape, data.num_classes, ctx.device)()
        store = TrajectoryStore.open(expert_dir(config, ctx.index), layout=None)
        return MTTMatcher(config.mtt, store, FlatForward(model), self.augment(config), ctx.device, ctx.comm,
                          shard_batch=config.parallel.split == "batch",
                          precision=resolve_precision(config.precision, ctx.device))


def _student_batch(config) -> int:
    """The student minibatch if the config fixes it (0: the whole union, known only at run time)."""
    if config.mtt.batch_syn is not None:
        return config.mtt.batch_syn
    from pdd_ray.data.registry import DATASETS
    classes = getattr(DATASETS.get(config.data.dataset), "num_classes", None)
    return classes * config.stages.ipc if classes else 0


METHODS.register("mtt")(MTT())
