"""Per-phase evaluation: after phase t, fresh networks on the memory of phases 1..t, tested on their classes.

The memory of phases 1..t is, stage by stage, the union of every seen phase's
stage k (a PDD memory of P stages stays P stages, trained progressively under
the protocol; a one-stage memory is one set). Labels become positions in the
class order (``pdd_ray.continual.split``) and the networks have one output per
seen class; the test split is cut to the seen classes the same way. A stage's
lr is the mean of the seen phases' learned lrs for it (none learned: the
protocol's). Results are kept per (builder, phase) under ``OUT/evaluation/``,
keyed by the memories and the protocol, so a resumed run trains only what is
missing. Who trains the networks is the caller's ``train(bundle, evaluations)``
(the run job's in-process or Ray-task runner).
"""

from __future__ import annotations

import json
import statistics
from typing import Callable

import torch

from pdd_ray import synset as synset_io
from pdd_ray.config import to_dict
from pdd_ray.continual.config import BuilderConfig, ContinualConfig
from pdd_ray.continual.layout import ContinualDir
from pdd_ray.continual.memory import digest, identity
from pdd_ray.continual.split import PhaseSplit, phase_bundle
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.evaluation.runner import Evaluation
from pdd_ray.provenance import write_json

VARIANT = ("class-incremental learning, memory-only (GDumb-style) evaluation: phase t gives access to its own "
           "classes only, each builder keeps a memory of those classes, and after phase t a fresh network is "
           "trained from scratch on the memory of every class seen in phases 1..t, then tested on the test "
           "images of those classes only (one output per seen class; no network carried between phases)")


def seen_stages(memories: list[synset_io.SyntheticSet], split: PhaseSplit, phase: int) -> list[synset_io.Stage]:
    """Stage k of the memory of phases 0..``phase``: every seen phase's stage k, labels in class order."""
    seen = memories[:phase + 1]
    stages = []
    for k in range(len(seen[0].stages)):
        parts = [(m.stages[k], split.offset(p)) for p, m in enumerate(seen)]
        lrs = [s.lr for s, _ in parts if s.lr]
        stages.append(synset_io.Stage(torch.cat([s.images for s, _ in parts]),
                                      torch.cat([s.labels + offset for s, offset in parts]),
                                      statistics.fmean(lrs) if lrs else None,
                                      {"factor": parts[0][0].info.get("factor", 1)}))
    return stages


def builder_protocol(config: ContinualConfig, builder: BuilderConfig, protocol: EvalProtocol) -> EvalProtocol:
    """The protocol of one builder: with ``equal_budget``, a one-stage memory trains as long as the longest."""
    most = max(b.stages for b in config.builders)
    if not config.equal_budget or builder.stages == most or protocol.mode == "union":
        return protocol
    return protocol.with_budget(protocol.total_epochs(most))


def base_protocol(config: ContinualConfig) -> EvalProtocol:
    """The configured evaluation protocol (``eval``, ``augment``, ``model.arch``)."""
    return EvalProtocol.from_config(config.eval, config.augment, config.model.arch)


def evaluate_phases(config: ContinualConfig, split: PhaseSplit, data, memories: dict[str, list],
                    train: Callable[[object, dict[str, Evaluation]], dict], progress: bool = True) -> dict[str, list]:
    """Per builder, one entry per phase (accuracy after training on phases 1..t); cached entries are reused."""
    paths = ContinualDir.of(config)
    entries: dict[str, list] = {b.label: [] for b in config.builders}
    for t in range(len(split.phases)):
        bundle = phase_bundle(data, split.seen(t))  # the seen classes' test images, labelled in class order
        evaluations, keys = {}, {}
        for builder in config.builders:
            keys[builder.label] = _key(config, builder, split, t)
            cached = _cached(paths.evaluation(builder.label, t), keys[builder.label])
            if cached is not None:
                entries[builder.label].append(cached)
            else:
                protocol = builder_protocol(config, builder, base_protocol(config))
                evaluations[builder.label] = Evaluation(protocol, seen_stages(memories[builder.label], split, t),
                                                        (bundle.test.images, bundle.test.labels))
        if not evaluations:
            continue
        results = train(bundle, evaluations)
        for builder in config.builders:
            if builder.label in results:
                entry = _entry(split, t, evaluations[builder.label], results[builder.label], keys[builder.label])
                write_json(paths.evaluation(builder.label, t), entry)
                entries[builder.label].append(entry)
    return entries


def _entry(split: PhaseSplit, t: int, evaluation: Evaluation, result, key: str) -> dict:
    stages = evaluation.stages
    return {"phase": t + 1, "classes": list(split.classes(t)), "seen_classes": list(split.seen(t)),
            "memory_images": sum(len(s.training_data()[1]) for s in stages), "memory_stages": len(stages),
            "test_images": len(evaluation.split[1]), "mean": result.mean, "std": result.std,
            "final": result.final, "per_stage_mean": result.per_phase_mean(), "per_run": result.per_run,
            "mode": evaluation.run_mode, "epochs": evaluation.protocol.total_epochs(len(stages), evaluation.run_mode),
            "protocol": evaluation.protocol.describe(num_stages=len(stages)), "key": key}


def _key(config: ContinualConfig, builder: BuilderConfig, split: PhaseSplit, t: int) -> str:
    """What an evaluation after phase t depends on: the memories of phases 1..t and the protocol."""
    return digest({"memories": [identity(config, builder, split, p) for p in range(t + 1)],
                   "eval": to_dict(config.eval), "augment": to_dict(config.augment), "model": to_dict(config.model),
                   "equal_budget": config.equal_budget, "most_stages": max(b.stages for b in config.builders)})


def _cached(path, key: str) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if entry.get("key") == key else None


__all__ = ["VARIANT", "base_protocol", "builder_protocol", "evaluate_phases", "seen_stages"]
