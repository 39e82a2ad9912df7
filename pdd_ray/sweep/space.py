"""The search space: Tune's ``param_space``, the points checked up front, derived IPC and trial names.

Pure functions over a ``SweepConfig``; nothing here starts Ray or touches disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass

from pdd_ray.errors import UserError
from pdd_ray.sweep.config import SampleSpec, SweepConfig


def param_space(config: SweepConfig) -> dict:
    """``{dotted key: tune.grid_search(...) | tune.<sampler>(...)}`` for ``tune.Tuner``."""
    from ray import tune
    space = {key: tune.grid_search(list(values)) for key, values in config.grid.items()}
    space.update({key: sampler(spec) for key, spec in config.sample.items()})
    return space


def sampler(spec: SampleSpec):
    """The Tune distribution of one sampled key."""
    from ray import tune
    if spec.type == "choice":
        return tune.choice(list(spec.values))
    if spec.type == "randint":
        return tune.randint(int(spec.low), int(spec.high))
    return (tune.loguniform if spec.type == "loguniform" else tune.uniform)(spec.low, spec.high)


def grid_points(config: SweepConfig) -> list[dict]:
    """Every combination of the grid values (one empty point when there is no grid)."""
    keys = list(config.grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(config.grid[k] for k in keys))]


def check_points(config: SweepConfig) -> list[dict]:
    """Grid points combined with the ends of every sampled range: what validation must accept."""
    if not config.sample:
        return grid_points(config)
    ends = {key: spec.ends() for key, spec in config.sample.items()}
    first = {key: values[0] for key, values in ends.items()}
    variants = [first] + [{**first, key: value} for key, values in ends.items() for value in values[1:]]
    return [{**point, **variant} for point in grid_points(config) for variant in variants]


def with_derived_ipc(params: dict, total_ipc: int | None, base_num_stages: int) -> dict:
    """``params`` plus ``stages.ipc = total_ipc / stages.num_stages`` when a total IPC is fixed."""
    if total_ipc is None:
        return dict(params)
    num_stages = params.get("stages.num_stages", base_num_stages)
    if not isinstance(num_stages, int) or isinstance(num_stages, bool) or num_stages < 1:
        raise UserError(f"stages.num_stages must be a whole number >= 1, got {num_stages!r}")
    if total_ipc % num_stages:
        raise UserError(f"total_ipc={total_ipc} is not divisible by stages.num_stages={num_stages}: "
                        f"use divisors of {total_ipc} ({', '.join(map(str, divisors(total_ipc)))})")
    return {**params, "stages.ipc": total_ipc // num_stages}


def divisors(n: int) -> list[int]:
    """The positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def trial_name(params: dict) -> str:
    """A stable, readable directory name: ``ipc=2_num_stages=5_<hash of the exact values>``.

    The hash keeps two points apart even when rounding or shortened keys make the readable part equal.
    """
    readable = "_".join(f"{key.rsplit('.', 1)[-1]}={_short(params[key])}" for key in sorted(params))
    readable = re.sub(r"[^A-Za-z0-9._=+-]+", "-", readable)[:80]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{readable}_{digest}" if readable else digest


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class StepCounter:
    """Tune's ``step``: one tick per validation check, monotone across stages (ASHA's clock).

    A stage validates at iteration 0, every ``eval_every`` and at its last iteration; the count is
    computed from (stage, iteration), so a resumed trial continues the same numbering.
    """

    iterations: int
    eval_every: int

    @property
    def per_stage(self) -> int:
        """Validation checks in one stage."""
        return math.ceil(self.iterations / self.eval_every) + 1

    def at(self, stage: int, iteration: int) -> int:
        """Step of the check at ``iteration`` of 0-based ``stage`` (starting at 1)."""
        return stage * self.per_stage + math.ceil(iteration / self.eval_every) + 1

    def final(self, num_stages: int) -> int:
        """Step of the final report, after every stage's last check."""
        return num_stages * self.per_stage + 1
