"""The validation check that picks each stage's best iterate.

A candidate S_i is scored the way it will be used: ``val_nets`` networks are
trained progressively on U_1, …, U_{i-1} under the evaluation protocol (the
same seeds as the final evaluation's runs, so net j starts exactly where final
run j stands after stage i-1), then on U_{i-1} ∪ S_i with the candidate's lr for
``stages.eval_epochs``; the score is their mean accuracy on the validation split.
The earlier phases are trained once per stage and cached, so a check costs one
phase per net. With a ``StartCache`` the nets of stage i continue from the saved
nets of stage i-1 (one more phase, on U_{i-1}) instead of retraining through
U_1 … U_{i-1}: the validation cost of a stage stays one phase however many stages
came before, and the numbers are the same (same weights, momentum and RNG state). ``stages.validation_start=scratch`` is the older check: fresh
nets trained on the union U_{i-1} ∪ S_i alone.

The reference selects on test accuracy; selecting on a split held out of the
training data keeps the test set for the report alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pdd_ray import synset as synset_io
from pdd_ray.distill.checkpoint import load_checkpoint, save_checkpoint
from pdd_ray.evaluation.recipe import EvalProtocol
from pdd_ray.evaluation.protocol import Phase
from pdd_ray.train.loop import accuracy, make_sgd


@dataclass
class NetState:
    """A network part-way through the protocol: weights, SGD momentum, batch-order RNG."""

    weights: dict
    momentum: list  # per parameter, in model.parameters() order (None before the first step)
    rng: torch.Tensor


    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat named CPU tensors (what a safetensors file holds)."""
        out = {f"{prefix}.w.{k}": v.detach().cpu() for k, v in self.weights.items()}
        out.update({f"{prefix}.m.{i}": m.detach().cpu() for i, m in enumerate(self.momentum) if m is not None})
        out[f"{prefix}.rng"] = self.rng
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, names: list[str],
                     parameters: int) -> "NetState":
        """Inverse of ``to_tensors``: ``names`` the state-dict keys, ``parameters`` how many parameters."""
        return cls({k: tensors[f"{prefix}.w.{k}"] for k in names},
                   [tensors.get(f"{prefix}.m.{i}") for i in range(parameters)], tensors[f"{prefix}.rng"])


class StartCache:
    """The validation nets' starts of each stage on disk, keyed by everything that trained them.

    ``context``: the settings that shape a start (config fingerprint, evaluation protocol);
    the key adds the stages' images and lrs, so a start is only reused for the very stages,
    settings and seeds that produced it. Files are replaced atomically; a stale one is ignored.
    """

    def __init__(self, directory: Path, context: str):
        self.directory, self.context = Path(directory), context

    def path(self, count: int) -> Path:
        """Starts after ``count`` earlier stages."""
        return self.directory / f"validation_starts_{count}.safetensors"

    def key(self, stages: list) -> str:
        digest = hashlib.sha256(self.context.encode())
        for stage in stages:
            digest.update(stage.images.detach().cpu().contiguous().numpy().reshape(-1).view("uint8"))
            digest.update(json.dumps([stage.lr, stage.info.get("factor", 1)]).encode())
        return digest.hexdigest()

    def load(self, stages: list, make_model) -> list[NetState] | None:
        """The cached starts after ``stages``, or None when absent or written for anything else."""
        path = self.path(len(stages))
        if not path.is_file():
            return None
        tensors, meta = load_checkpoint(path)
        if meta.get("key") != self.key(stages):
            return None
        model = make_model()
        names, parameters = list(model.state_dict()), len(list(model.parameters()))
        return [NetState.from_tensors(tensors, f"net{j}", names, parameters) for j in range(meta["nets"])]

    def save(self, stages: list, starts: list[NetState]) -> None:
        tensors = {k: v for j, start in enumerate(starts) for k, v in start.to_tensors(f"net{j}").items()}
        save_checkpoint(self.path(len(stages)), tensors, {"key": self.key(stages), "nets": len(starts)})


class ProgressiveValidator:
    """``validator(images, lr) -> accuracy`` for candidates of one stage (see the module docstring)."""

    def __init__(self, earlier: list, labels: torch.Tensor, factor: int, make_model, val, *,
                 protocol: EvalProtocol, nets: int, epochs: int, start: str = "progressive",
                 cache: StartCache | None = None):
        """``protocol`` trains the earlier stages; the candidate's phase runs it for ``epochs``.

        ``cache``: where the starts of each stage are kept, so this stage's continue the last's.
        """
        self.earlier, self.labels, self.factor = earlier, labels.cpu(), factor
        self.make_model, self.val, self.nets, self.start = make_model, val, nets, start
        self.cache = cache
        self.protocol, self.candidate_protocol = protocol, protocol.replace(epochs=epochs)
        self._starts: list[NetState] | None = None  # trained lazily: only the validating worker pays

    def with_model(self, make_model) -> "ProgressiveValidator":
        """The same check (same starts, once trained) building its networks with ``make_model``
        (e.g. on the device of the Ray task it runs in)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.make_model, copy.cache = make_model, None
        return copy

    def __call__(self, images: torch.Tensor, lr: float | None) -> float:
        candidate = synset_io.Stage(images.detach().cpu(), self.labels, lr, {"factor": self.factor})
        stages = self.earlier + [candidate]
        if self.start == "scratch":
            return self.candidate_protocol.evaluate(stages, self.val, self.make_model, mode="union", runs=self.nets,
                                                    progress=False).mean
        phase = self.candidate_protocol.phases(stages, "progressive")[-1]
        scores = [self._score(start, phase) for start in self.starts()]
        return sum(scores) / len(scores)

    def starts(self) -> list[NetState]:
        """Net j after the protocol's phases on U_1 … U_{i-1} (a fresh net at stage 1)."""
        if self._starts is None:
            self._starts = self.cache.load(self.earlier, self.make_model) if self.cache else None
        if self._starts is None:
            previous = self.cache.load(self.earlier[:-1], self.make_model) if self.cache and self.earlier else None
            if previous is not None and len(previous) == self.nets:
                last = self.protocol.phases(self.earlier, "progressive")[-1]  # U_{i-1}
                self._starts = [self._continue(start, last, self.protocol) for start in previous]
            else:
                self._starts = [self._train_earlier(j) for j in range(self.nets)]
            if self.cache is not None:
                self.cache.save(self.earlier, self._starts)
        return self._starts

    def _train_earlier(self, run: int) -> NetState:
        torch.manual_seed(self.protocol.seed + run)  # the final evaluation's seeds for run ``run``
        generator = torch.Generator().manual_seed(self.protocol.seed + run)
        model = self.make_model()
        optimizer = self._optimizer(model)
        if self.earlier:
            self.protocol.train(model, self.protocol.phases(self.earlier, "progressive"), generator, optimizer)
        return _state_of(model, optimizer, generator)

    def _continue(self, start: NetState, phase: Phase, protocol: EvalProtocol):
        """Net ``start`` trained one more ``phase`` under ``protocol``: its new state."""
        model, optimizer, generator = self._resume(start)
        protocol.train(model, [phase], generator, optimizer)
        return _state_of(model, optimizer, generator)

    def _score(self, start: NetState, phase: Phase) -> float:
        model, optimizer, generator = self._resume(start)
        self.candidate_protocol.train(model, [phase], generator, optimizer)
        return accuracy(model, *self.val, precision=self.candidate_protocol.precision)

    def _resume(self, start: NetState):
        """(model, optimizer, generator) exactly as ``start`` left them."""
        model = self.make_model()
        model.load_state_dict(start.weights)
        optimizer = self._optimizer(model)
        for p, m in zip(model.parameters(), start.momentum):
            if m is not None:
                optimizer.state[p]["momentum_buffer"] = m.clone().to(p.device)
        generator = torch.Generator()
        generator.set_state(start.rng)
        return model, optimizer, generator

    def _optimizer(self, model):
        return make_sgd(model, DEFAULT_START_LR, self.protocol.momentum, self.protocol.weight_decay)


def _state_of(model, optimizer, generator) -> NetState:
    momentum = [optimizer.state.get(p, {}).get("momentum_buffer") for p in model.parameters()]
    return NetState({k: v.clone() for k, v in model.state_dict().items()},
                    [None if m is None else m.clone() for m in momentum], generator.get_state())


DEFAULT_START_LR = 0.01  # replaced by each phase's own lr before the first step

__all__ = ["ProgressiveValidator", "NetState", "StartCache"]
