"""The evaluation recipe a synthetic set was made with, read back from its manifest.

A run writes its whole config into the set's manifest. Training a fresh network
on the set the way the run did needs three of its sections: ``model`` (which
network), ``augment`` (DSA while training) and ``eval`` (the protocol). This
module reads them back, so ``pdd-ray evaluate`` and ``pdd_ray.evaluate`` reproduce
the run's own number by default, and a caller may still override any field.

A manifest may come from anyone: every section is rebuilt through the typed
configs (unknown keys dropped, because older or newer pdd-ray versions write
other keys; types and values validated), never trusted as-is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pdd_ray.config import AugmentConfig, EvalConfig, ModelConfig, from_dict, set_dotted, to_dict, validate
from pdd_ray.errors import UserError
from pdd_ray.evaluation.recipe import EvalProtocol

SECTIONS = {"model": ModelConfig, "augment": AugmentConfig, "eval": EvalConfig}


@dataclass(frozen=True)
class RecordedRecipe:
    """Network, augmentation and protocol of a synthetic set's run (defaults where it recorded none)."""

    model: ModelConfig
    augment: AugmentConfig
    eval: EvalConfig
    recorded: bool  # False: the set carried no run config (the defaults are a guess, not the run's recipe)

    def protocol(self) -> EvalProtocol:
        """The evaluation protocol these sections describe."""
        return EvalProtocol.from_config(self.eval, self.augment, self.model.arch)

    def with_overrides(self, overrides: dict) -> "RecordedRecipe":
        """A copy with dotted ``{"eval.runs": 3, "model.width": 64}`` changes applied and validated."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key.split(".")[0] not in SECTIONS or "." not in key:
                raise UserError(f"unknown evaluation override '{key}': use model.*, augment.* or eval.*")
            set_dotted(data, key, value)
        return _build(data, self.recorded)

    def to_dict(self) -> dict:
        """The three sections as plain dicts."""
        return {name: to_dict(getattr(self, name)) for name in SECTIONS}


def recorded_recipe(config: dict | None) -> RecordedRecipe:
    """The recipe in a manifest's ``config`` (a run's whole config dict); defaults for what is absent."""
    config = config if isinstance(config, dict) else {}
    data = {}
    for name, cls in SECTIONS.items():
        section = config.get(name)
        if section is not None and not isinstance(section, dict):
            raise UserError(f"the set's manifest has a malformed '{name}' section: {section!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        data[name] = {k: v for k, v in (section or {}).items() if k in known}
    return _build(data, recorded=any(name in config for name in SECTIONS))


def _build(data: dict, recorded: bool) -> RecordedRecipe:
    sections = {name: from_dict(cls, data.get(name, {}), f"{name}.") for name, cls in SECTIONS.items()}
    for section in sections.values():
        validate(section)
    return RecordedRecipe(**sections, recorded=recorded)
