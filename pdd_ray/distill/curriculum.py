"""The forgetting curriculum (paper Sec. 5): which training examples each stage distils.

Scores are the forgetting events of each training example (Toneva et al.), counted by
the stage-1 experts and averaged over them; stage i (1-based) distils the examples
with scores in [w(i-1), w·i), lowest first. With MTT the transition experts of stage
i train on that partition too; stage 1's experts see all data (they count the events).
"""

from __future__ import annotations

import torch

from pdd_ray.distill.init import forgetting_partition
from pdd_ray.distill.transitions import expert_dir
from pdd_ray.errors import UserError


def stage_partition(config, data, index: int) -> torch.Tensor | None:
    """Positions in ``data.train`` stage ``index`` distils (forgetting curriculum), or None for all."""
    if not config.stages.forgetting_curriculum:
        return None
    from pdd_ray.selection.forgetting import load_scores
    path = expert_dir(config, 0) / "forgetting.safetensors"
    if not path.is_file():
        raise UserError(f"forgetting_curriculum needs {path}: build the stage-1 experts with track_forgetting=true")
    scores, disk_indices = load_scores(path)
    by_disk = dict(zip(disk_indices.tolist(), scores.tolist()))
    missing = [i for i in data.train_indices.tolist() if i not in by_disk]
    if missing:
        raise UserError(f"{path} has no forgetting score for {len(missing)} training examples (e.g. #{missing[0]}): "
                        "it was built on a different split; rebuild the buffer with this data config")
    train_scores = torch.tensor([by_disk[i] for i in data.train_indices.tolist()])
    return forgetting_partition(train_scores, index, config.stages.forgetting_bin_width, data.train.labels,
                                keep_at_least=config.stages.ipc * config.base.factor(config) ** 2)
