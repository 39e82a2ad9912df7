"""Experiment tracking: ``logging: [tensorboard, mlflow, wandb]`` (any subset) in a run or sweep config.

    Tracker             what a run logs to: scalars at a step, an image file at a step, close
    TRACKERS            one small class per backend (a registry): tensorboard, mlflow, wandb
    create_tracker()    the front door: the trackers a run's ``logging`` names, as one Tracker
    tune_callbacks()    the matching Ray Tune logger callbacks, for a sweep
    TrackingConfig      the backends' shared settings (the ``tracking:`` section)

Where files go (``OUT``: the run directory):
    tensorboard   OUT/tensorboard/events.out.tfevents.*  (tensorboardX, a dependency: works out of the box)
    mlflow        MLFLOW_TRACKING_URI, else tracking.mlflow_uri, else OUT/mlflow.db with artifacts in
                  OUT/mlartifacts (needs ``pip install mlflow``)
    wandb         OUT/wandb/; offline unless an API key is set (WANDB_API_KEY) or WANDB_MODE says otherwise
                  (needs ``pip install wandb``)

Backend names and installed packages are checked with the config (``check_backends``),
before any compute; a missing package is one line naming what to pip install.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import netrc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pdd_ray.errors import UserError
from pdd_ray.registry import Registry


@dataclass
class TrackingConfig:
    """Settings the trackers share (``tracking.*``); which trackers run is ``logging``."""

    project: str = "pdd-ray"  # MLflow experiment / W&B project
    run_name: str | None = None  # None: the run directory's name
    every: int = 1  # training scalars (loss, lr, skipped) every N iterations; validation checks always
    mlflow_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///OUT/mlflow.db

    def validate(self) -> None:
        if self.every < 1:
            raise UserError(f"tracking.every must be >= 1, got {self.every}")
        if not self.project:
            raise UserError("tracking.project must not be empty")


class Tracker:
    """Where a run's numbers and pictures go; this base logs nothing (no backend asked for)."""

    names: tuple[str, ...] = ()

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars by tag at one step (PDD: the run's global iteration)."""

    def log_image(self, tag: str, path: Path, step: int) -> None:
        """An image file (a PNG the run already wrote) under ``tag`` at ``step``."""

    def close(self) -> None:
        """Flush and finish."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Trackers(Tracker):
    """Several trackers as one: each call goes to all of them, in order."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self.names = tuple(name for t in trackers for name in t.names)

    def log_scalars(self, values, step) -> None:
        for tracker in self.trackers:
            tracker.log_scalars(values, step)

    def log_image(self, tag, path, step) -> None:
        for tracker in self.trackers:
            tracker.log_image(tag, path, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


TRACKERS: Registry[type] = Registry("logging backend")


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files in OUT/tensorboard, written with tensorboardX."""

    names = ("tensorboard",)
    module, package = "tensorboardX", "tensorboardX"

    def __init__(self, run_dir: Path, params: dict, settings: TrackingConfig):
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(logdir=str(tensorboard_dir(run_dir)), flush_secs=30)
        self.writer.add_text("config", "```\n" + json.dumps(params, indent=2, default=str) + "\n```", 0)

    def log_scalars(self, values, step) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag, path, step) -> None:
        self.writer.add_image(tag, _read_rgb(path), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()

    @staticmethod
    def tune_callback(settings: TrackingConfig, directory: Path):
        from ray.tune.logger import TBXLoggerCallback
        return TBXLoggerCallback()


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """One MLflow run per PDD run, in the experiment ``tracking.project``."""

    names = ("mlflow",)
    module, package = "mlflow", "mlflow"

    def __init__(self, run_dir: Path, params: dict, settings: TrackingConfig):
        from mlflow.tracking import MlflowClient
        uri = mlflow_uri(settings, run_dir)
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(settings.project)
        # A store of the run's own keeps its artifacts beside it too (MLflow's default is the working dir).
        artifacts = (run_dir / "mlartifacts").resolve().as_uri() if uri == _own_store(run_dir) else None
        experiment_id = experiment.experiment_id if experiment else \
            self.client.create_experiment(settings.project, artifact_location=artifacts)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name(settings, run_dir)).info.run_id
        self._log_params(params)

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param
        flat = [Param(k, str(v)[:500]) for k, v in flatten(params).items()]  # MLflow's value limit
        for start in range(0, len(flat), 100):  # and its batch limit
            self.client.log_batch(self.run_id, params=flat[start:start + 100])

    def log_scalars(self, values, step) -> None:
        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_mlflow_key(k), float(v), stamp, step)
                                                    for k, v in values.items()])

    def log_image(self, tag, path, step) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=f"images/{_mlflow_key(tag)}")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)

    @staticmethod
    def tune_callback(settings: TrackingConfig, directory: Path):
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        return MLflowLoggerCallback(tracking_uri=mlflow_uri(settings, directory), experiment_name=settings.project)


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """One W&B run per PDD run, in the project ``tracking.project``; offline without an API key."""

    names = ("wandb",)
    module, package = "wandb", "wandb"

    def __init__(self, run_dir: Path, params: dict, settings: TrackingConfig):
        import wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(project=settings.project, name=run_name(settings, run_dir), dir=str(run_dir),
                              config=params, mode=wandb_mode())

    def log_scalars(self, values, step) -> None:
        self.run.log(dict(values), step=step)

    def log_image(self, tag, path, step) -> None:
        self.run.log({tag: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()

    @staticmethod
    def tune_callback(settings: TrackingConfig, directory: Path):
        from ray.air.integrations.wandb import WandbLoggerCallback
        # Ray's callback asks for an API key unless WANDB_MODE says offline: say it when there is none.
        os.environ.setdefault("WANDB_MODE", wandb_mode())
        return WandbLoggerCallback(project=settings.project)


def check_backends(names: list[str], where: str = "logging") -> None:
    """A one-line UserError for an unknown, repeated or not-installed backend (before any compute)."""
    for name in names:
        if name not in TRACKERS:
            close = difflib.get_close_matches(str(name), TRACKERS.names(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{where}: unknown logging backend '{name}'{hint} (choose from "
                            f"{', '.join(TRACKERS.names())})")
        if names.count(name) > 1:
            raise UserError(f"{where}: '{name}' is listed twice")
        backend = TRACKERS.get(name)
        if importlib.util.find_spec(backend.module) is None:
            raise UserError(f"{where}: {name} needs the '{backend.package}' package, which is not installed: "
                            f"pip install {backend.package}")


def create_tracker(names: list[str], run_dir: str | Path, params: dict | None = None,
                   settings: TrackingConfig | None = None) -> Tracker:
    """The trackers ``names`` asks for, writing under ``run_dir``, as one ``Tracker`` (none: logs nothing).

    ``params``: the run's config as a plain mapping (TensorBoard text, MLflow params, W&B config).
    """
    check_backends(list(names))
    settings = settings or TrackingConfig()
    run_dir = Path(run_dir)
    return Trackers([TRACKERS.get(name)(run_dir, params or {}, settings) for name in names])


def tune_callbacks(names: list[str], directory: str | Path, settings: TrackingConfig | None = None) -> list:
    """Ray Tune's logger callbacks for ``names``: each trial's reported metrics, in the same backends.

    ``directory``: the sweep's (MLflow's own store goes there, as a run's goes in its directory)."""
    check_backends(list(names))
    return [TRACKERS.get(name).tune_callback(settings or TrackingConfig(), Path(directory)) for name in names]


def tensorboard_dir(run_dir: str | Path) -> Path:
    """Where a run's TensorBoard event files go."""
    return Path(run_dir) / "tensorboard"


def mlflow_uri(settings: TrackingConfig, run_dir: Path) -> str:
    """MLFLOW_TRACKING_URI, else ``tracking.mlflow_uri``, else a store of the run's own, OUT/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_uri or _own_store(run_dir)


def _own_store(run_dir: Path) -> str:
    # MLflow's file store (./mlruns) is refused by recent versions; SQLite is its local default now.
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def wandb_mode() -> str:
    """WANDB_MODE when set; else online with an API key (WANDB_API_KEY or ``wandb login``), offline without."""
    return os.environ.get("WANDB_MODE") or ("online" if _wandb_key() else "offline")


def _wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # where ``wandb login`` keeps it
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_name(settings: TrackingConfig, run_dir: Path) -> str:
    return settings.run_name or run_dir.resolve().name


def flatten(mapping: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params are flat)."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _mlflow_key(tag: str) -> str:
    return tag.replace(" ", "_")


def _read_rgb(path: Path):
    """The PNG at ``path`` as an H x W x 3 uint8 array."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


__all__ = ["TrackingConfig", "Tracker", "Trackers", "TRACKERS", "check_backends", "create_tracker",
           "tune_callbacks", "tensorboard_dir"]
