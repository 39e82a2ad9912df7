"""Typed configs: dataclasses loaded from YAML, overridden by ``key=value``, validated up front.

Every command builds its config here before any compute starts, so a typo or
a bad value costs the user one line of error, not a half-finished run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pdd_ray.errors import UserError

C = TypeVar("C")


# ---------------------------------------------------------------- config types

@dataclass
class DataConfig:
    """Which dataset, where it lives, and how the training split is carved up."""

    dataset: str = "fashion_mnist"
    root: str | None = None
    download: bool = False
    val_size: int = 5000  # held out of the training split for model selection
    train_per_class: int | None = None  # cap for quick runs and tests
    zca: bool | None = None  # None: the dataset's reference choice
    seed: int = 0

    def validate(self) -> None:
        from pdd_ray.data.registry import DATASETS
        DATASETS.get(self.dataset)
        _check(self.val_size >= 0, f"data.val_size must be >= 0, got {self.val_size}")
        _check(self.train_per_class is None or self.train_per_class >= 1,
               f"data.train_per_class must be >= 1, got {self.train_per_class}")


@dataclass
class ModelConfig:
    """The network: a registered architecture and its options."""

    arch: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: 3 for 28/32 px, 4 for 64 px
    norm: str = "instancenorm"
    act: str = "relu"
    pool: str = "avgpool"

    # Far above the paper's nets (width 128, depth 3-5); a width of 1e9 would ask for exabytes.
    MAX_WIDTH = 4096
    MAX_DEPTH = 16

    def validate(self) -> None:
        from pdd_ray.models import MODELS
        from pdd_ray.models.norm import NORMS
        MODELS.get(self.arch)
        _check(self.width >= 1, f"model.width must be >= 1, got {self.width}")
        _check(self.width <= self.MAX_WIDTH, f"model.width must be <= {self.MAX_WIDTH}, got {self.width}")
        _check(self.depth is None or self.depth >= 1, f"model.depth must be >= 1, got {self.depth}")
        _check(self.depth is None or self.depth <= self.MAX_DEPTH,
               f"model.depth must be <= {self.MAX_DEPTH}, got {self.depth}")
        _check(self.norm in NORMS, f"model.norm must be one of {', '.join(NORMS)}, got '{self.norm}'")

    def kwargs(self) -> dict:
        """Keyword arguments for ``create_model``."""
        return {"width": self.width, "depth": self.depth, "norm": self.norm, "act": self.act, "pool": self.pool}


@dataclass
class AugmentConfig:
    """DSA augmentation (reference: one op per call from all six)."""

    dsa: bool = True
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    mode: str = "single"

    def validate(self) -> None:
        from pdd_ray.augment.dsa import DSAConfig
        DSAConfig(self.strategy, self.mode)


EVAL_MODES = ("progressive", "union", "sequential")


@dataclass
class EvalConfig:
    """The evaluation protocol: train fresh networks on a synthetic set, report test accuracy.

    Defaults follow PDD's ``evaluate_mtt.py`` as its README runs it (``--epoch_eval_train 500``,
    5 nets): ``schedule: official`` trains ``epochs + 1`` epochs per phase and drops the lr x0.1
    after epoch index ``epochs // 2 + 1``; ``halfway`` is the older ``epochs`` epochs, x0.1 from
    index ``epochs // 2``. ``pdd_ray.evaluation.EvalProtocol.describe()`` says it in words.
    """

    runs: int = 5
    epochs: int = 500  # per phase (one phase per stage in progressive/sequential mode); see schedule
    batch_size: int = 256
    lr: float | None = None  # None: the set's learned lr per stage, else 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    mode: str = "progressive"
    schedule: str = "official"
    seed: int = 0
    # Where the runs train: "process" (here, one after another) or "ray" (every run of the final
    # evaluation and the random baseline at once as Ray tasks; validation checks beside the stage).
    executor: str = "process"
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0  # fractional: 0.25 packs four runs on a GPU
    cutmix: float = 0.0  # probability a training batch is CutMix-ed (IDC's evaluation: 0.5 with schedule multistep)
    report_best_of: int = 0  # > 0: also report the best test accuracy over N checkpoints per phase (test-selected)

    MAX_RUNS = 1000
    MAX_EPOCHS = 100_000

    def validate(self) -> None:
        _check(self.runs >= 1, f"eval.runs must be >= 1, got {self.runs}")
        _check(self.runs <= self.MAX_RUNS, f"eval.runs must be <= {self.MAX_RUNS}, got {self.runs}")
        _check(self.executor in ("process", "ray"), f"eval.executor must be process or ray, got '{self.executor}'")
        _check(self.cpus_per_run > 0 and self.gpus_per_run >= 0,
               f"eval.cpus_per_run must be > 0 and eval.gpus_per_run >= 0, got {self.cpus_per_run}, "
               f"{self.gpus_per_run}")
        _check(isinstance(self.report_best_of, int) and not isinstance(self.report_best_of, bool)
               and self.report_best_of >= 0, f"eval.report_best_of must be an integer >= 0, got {self.report_best_of!r}")
        _check(not isinstance(self.cutmix, bool) and isinstance(self.cutmix, (int, float))
               and 0.0 <= self.cutmix <= 1.0, f"eval.cutmix must be a probability in [0, 1], got {self.cutmix!r}")
        _check(self.epochs >= 1, f"eval.epochs must be >= 1, got {self.epochs}")
        _check(self.epochs <= self.MAX_EPOCHS, f"eval.epochs must be <= {self.MAX_EPOCHS}, got {self.epochs}")
        _check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr is None or self.lr > 0, f"eval.lr must be > 0, got {self.lr}")
        _check(self.mode in EVAL_MODES, f"eval.mode must be one of {', '.join(EVAL_MODES)}, got '{self.mode}'")
        schedules = ("official", "halfway", "multistep")  # pdd_ray.evaluation.protocol.SCHEDULES
        _check(self.schedule in schedules,
               f"eval.schedule must be one of {', '.join(schedules)}, got '{self.schedule}'")


@dataclass
class SelectionConfig:
    """Coreset baselines: which method, how many per class, and the network that scores examples."""

    method: str = "random"
    ipc: int = 10
    epochs: int = 5  # training on real data for herding / k-center features and forgetting counts
    batch_size: int = 256
    lr: float = 0.01
    width: int = 64

    def validate(self) -> None:
        from pdd_ray.selection import SELECTORS
        SELECTORS.get(self.method)
        _check(self.ipc >= 1, f"selection.ipc must be >= 1, got {self.ipc}")
        _check(self.epochs >= 1, f"selection.epochs must be >= 1, got {self.epochs}")
        _check(self.width >= 1, f"selection.width must be >= 1, got {self.width}")


@dataclass
class BaselineConfig:
    """``pdd-ray baseline``: select real images per class, save them as a synthetic set, evaluate."""

    out: str = "runs/baseline"
    seed: int = 0
    device: str = "auto"
    evaluate: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_device(self.device)


# ---------------------------------------------------------------- loading

def check_device(name: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is a user error."""
    ok = name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())
    _check(ok, f"device must be auto, cpu, cuda or cuda:N, got '{name}'")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple = (),
                base: dict | None = None) -> C:
    """Build ``cls`` from ``base`` under an optional YAML file under ``key=value`` overrides, then validate it."""
    data = merge_under(base or {}, read_yaml(path) if path is not None else {})
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    config = from_dict(cls, data)
    validate(config)
    return config


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``, with user-facing errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text file (not UTF-8); give a YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is parsed as YAML (numbers, bools, null, lists)."""
    if "=" not in item:
        hint = override_hint(item)
        raise UserError(f"override '{item}' must look like key=value" + (f"; did you mean '{hint}'?" if hint else ""))
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# A dotted config key as users type it (stages.ipc, experts.recipe.epochs).
KEY_SHAPE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def override_hint(word: str, following: str | None = None) -> str | None:
    """The ``key=value`` the user most likely meant by ``word`` (and the ``following`` word), else None.

    Catches the YAML habit ``stages.ipc:2`` / ``stages.ipc: 2`` and the shell habit
    ``stages.ipc 2``; ``following`` is the next word on the command line, if any.
    """
    key, colon, value = word.partition(":")
    if not KEY_SHAPE.fullmatch(key) or value.startswith("/"):  # s3://bucket is a URI, not key:value
        return None
    value = value or (following or "")
    if colon or following is not None:
        return f"{key}={value or 'VALUE'}"
    return None


def suggest_key(key: str, known: list[str]) -> str | None:
    """The known dotted key closest to a mistyped ``key`` (difflib), or None when nothing is close."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of config dataclass ``cls``: sections and their fields, depth first."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        section = _section_type(hints[f.name])
        if section is not None:
            keys += dotted_keys(section, f"{prefix}{f.name}.")
    return keys


def _section_type(hint) -> type | None:
    # A nested config (or an optional one): its fields are dotted keys too.
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        sections = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return sections[0] if sections else None
    return None


def _first_leaf(key: str, value) -> str:
    # A mistyped section (stage: {ipc: 2}) is matched as the key the user wrote in full: stage.ipc.
    while isinstance(value, dict) and value:
        sub, value = next(iter(value.items()))
        key = f"{key}.{sub}"
    return key


def set_dotted(data: dict, key: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for key ``"a.b"``, creating sections; a UserError if a section is a value."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override '{key}': '{part}' is not a section")
    node[leaf] = value


def from_dict(cls: type[C], data: dict, where: str = "") -> C:
    """Instantiate dataclass ``cls`` from a nested dict, checking names and types."""
    if not isinstance(data, dict):
        raise UserError(f"'{where or 'config'}' must be a mapping, got {data!r}")
    if hasattr(cls, "with_presets"):
        # A config whose defaults depend on one of its own values (a base method's preset):
        # the preset goes under the user's keys, so what the user set always wins.
        data = cls.with_presets(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(_unknown_key_message(cls, where, unknown[0], data[unknown[0]]))
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _unknown_key_message(cls: type, where: str, name: str, value) -> str:
    """'unknown config key', with the closest known key (stages.ipcc -> stages.ipc), else the valid keys here."""
    key = _first_leaf(f"{where}{name}", value)
    hint = suggest_key(key, dotted_keys(cls, where))
    if hint is not None:
        return f"unknown config key '{key}'; did you mean '{hint}'?"
    names = sorted(f.name for f in dataclasses.fields(cls))
    return f"unknown config key '{key}'; valid keys here: {', '.join(names)}"


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except UserError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"'{where}' must be a list, got {value!r}")
        (item_type, *_) = typing.get_args(hint) or (Any,)
        return origin(_coerce(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is Any or hint is dict:
        return value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return _finite(value, where)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UserError(f"'{where}' must be {hint.__name__}, got {value!r}")
    return value


def _finite(value, where: str) -> float:
    """``value`` as a finite float: no setting means anything at inf or nan (they pass every ``> 0`` check)."""
    try:
        number = float(value)  # YAML 1.1 reads "1e-5" (no dot) as a string; users write lr_lr: 1e-5 all the time
    except (ValueError, OverflowError):
        raise UserError(f"'{where}' must be float, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"'{where}' must be a finite number, got {value!r}")
    return number


def merge_under(defaults: dict, data: dict) -> dict:
    """``data`` laid over ``defaults``, section by section (a preset under the user's values)."""
    merged = dict(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_under(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate(config) -> None:
    """Run ``validate()`` on a config and every nested config section."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)
    if hasattr(config, "validate"):
        config.validate()


def to_dict(config) -> dict:
    """Plain-dict form of a config, for manifests and result files."""
    return dataclasses.asdict(config)
