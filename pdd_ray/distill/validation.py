"""The validation check that picks each stage's best iterate.

A candidate S_i is scored the way it will be used: ``val_nets`` networks are
trained progressively on U_1, …, U_{i-1} under the evaluation protocol (the
same seeds as the final evaluation's runs, so net j starts exactly where final
run j stands after stage i-1), then on U_{i-1} ∪ S_i with the candidate's lr for
``stages.eval_epochs``; the score is their mean accuracy on the validation split.
The earlier phases are trained once per stage and cached, so a check costs one
phase per net. ``stages.validation_start=scratch`` is the older check: fresh
nets trained on the union U_{i-1} ∪ S_i alone.

The reference selects on test accuracy; selecting on a split held out of the
training data keeps the test set for the report alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pdd_ray import synset as synset_io
from pdd_ray.evaluation.recipe import EvalProtocol
from pdd_ray.evaluation.protocol import Phase
from pdd_ray.train.loop import accuracy, make_sgd


@dataclass
class NetState:
    """A network part-way through the protocol: weights, SGD momentum, batch-order RNG."""

    weights: dict
    momentum: list  # per parameter, in model.parameters() order (None before the first step)
    rng: torch.Tensor


class ProgressiveValidator:
    """``validator(images, lr) -> accuracy`` for candidates of one stage (see the module docstring)."""

    def __init__(self, earlier: list, labels: torch.Tensor, factor: int, make_model, val, *,
                 protocol: EvalProtocol, nets: int, epochs: int, start: str = "progressive"):
        """``protocol`` trains the earlier stages; the candidate's phase runs it for ``epochs``."""
        self.earlier, self.labels, self.factor = earlier, labels.cpu(), factor
        self.make_model, self.val, self.nets, self.start = make_model, val, nets, start
        self.protocol, self.candidate_protocol = protocol, protocol.replace(epochs=epochs)
        self._starts: list[NetState] | None = None  # trained lazily: only the validating worker pays

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
            self._starts = [self._train_earlier(j) for j in range(self.nets)]
        return self._starts

    def _train_earlier(self, run: int) -> NetState:
        torch.manual_seed(self.protocol.seed + run)  # the final evaluation's seeds for run ``run``
        generator = torch.Generator().manual_seed(self.protocol.seed + run)
        model = self.make_model()
        optimizer = self._optimizer(model)
        if self.earlier:
            self.protocol.train(model, self.protocol.phases(self.earlier, "progressive"), generator, optimizer)
        momentum = [optimizer.state.get(p, {}).get("momentum_buffer") for p in model.parameters()]
        return NetState({k: v.clone() for k, v in model.state_dict().items()},
                        [None if m is None else m.clone() for m in momentum], generator.get_state())

    def _score(self, start: NetState, phase: Phase) -> float:
        model = self.make_model()
        model.load_state_dict(start.weights)
        optimizer = self._optimizer(model)
        for p, m in zip(model.parameters(), start.momentum):
            if m is not None:
                optimizer.state[p]["momentum_buffer"] = m.clone()
        generator = torch.Generator()
        generator.set_state(start.rng)
        self.candidate_protocol.train(model, [phase], generator, optimizer)
        return accuracy(model, *self.val)

    def _optimizer(self, model):
        return make_sgd(model, DEFAULT_START_LR, self.protocol.momentum, self.protocol.weight_decay)


DEFAULT_START_LR = 0.01  # replaced by each phase's own lr before the first step

__all__ = ["ProgressiveValidator", "NetState"]
