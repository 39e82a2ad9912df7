"""Trackers: TensorBoard event files written and read back, the backend check, Tune's callbacks."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdd_ray.errors import UserError
from pdd_ray.tracking import (TRACKERS, TrackingConfig, check_backends, create_tracker, tensorboard_dir,
                              tune_callbacks)


def read_events(directory: Path) -> list:
    """Every Event in the TensorBoard files under ``directory``, parsed from the TFRecord framing:
    length (uint64), its CRC (uint32), the serialised Event, its CRC (uint32)."""
    from tensorboardX.proto.event_pb2 import Event
    events = []
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


def scalars(events) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the scalar summaries."""
    found: dict = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def images(events) -> dict[str, list]:
    """``{tag: [(step, height, width), ...]}`` of the image summaries."""
    found: dict = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("image"):
                found.setdefault(value.tag, []).append((event.step, value.image.height, value.image.width))
    return found


def test_tensorboard_writes_scalars_and_an_image_that_read_back(tmp_path):
    picture = tmp_path / "grid.png"
    Image.fromarray(np.full((12, 20, 3), 200, dtype=np.uint8)).save(picture)
    with create_tracker(["tensorboard"], tmp_path / "run", {"seed": 3}) as tracker:
        assert tracker.names == ("tensorboard",)
        tracker.log_scalars({"stage_1/loss": 0.5, "stage_1/lr": 0.01}, step=1)
        tracker.log_scalars({"stage_1/loss": 0.25}, step=2)
        tracker.log_image("stage_1/images", picture, step=2)
    events = read_events(tensorboard_dir(tmp_path / "run"))
    found = scalars(events)
    assert found["stage_1/loss"] == [(1, 0.5), (2, 0.25)]
    assert found["stage_1/lr"] == [(1, pytest.approx(0.01))]
    assert images(events) == {"stage_1/images": [(2, 12, 20)]}


def test_no_backend_logs_nothing(tmp_path):
    with create_tracker([], tmp_path) as tracker:
        tracker.log_scalars({"a": 1.0}, 0)
        assert tracker.names == ()
    assert not any(tmp_path.iterdir())


def test_an_unknown_backend_is_one_line_with_a_suggestion():
    with pytest.raises(UserError, match="unknown logging backend 'tensorbord'; did you mean 'tensorboard'") as info:
        check_backends(["tensorbord"])
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="listed twice"):
        check_backends(["tensorboard", "tensorboard"])


@pytest.mark.parametrize("name,package", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_optional_backend_names_its_pip_package(monkeypatch, name, package):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == package else real(module))
    with pytest.raises(UserError, match=f"pip install {package}") as info:
        check_backends([name])
    assert "\n" not in str(info.value)


def test_tracking_settings_validate():
    with pytest.raises(UserError, match="tracking.every must be >= 1"):
        TrackingConfig(every=0).validate()


def test_a_sweep_gets_tunes_matching_callbacks(monkeypatch, tmp_path):
    import ray.air.integrations.mlflow as ray_mlflow
    import ray.air.integrations.wandb as ray_wandb
    from ray.tune.logger import TBXLoggerCallback

    (callback,) = tune_callbacks(["tensorboard"], tmp_path)
    assert isinstance(callback, TBXLoggerCallback)
    # Ray's MLflow and W&B callbacks import their package when built: stand-ins record what they are given.
    for module, name in ((ray_mlflow, "MLflowLoggerCallback"), (ray_wandb, "WandbLoggerCallback")):
        monkeypatch.setattr(module, name, lambda name=name, **kwargs: (name, kwargs))
    for backend in ("mlflow", "wandb"):
        monkeypatch.setattr(TRACKERS.get(backend), "module", "json")  # "installed"
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no ``wandb login`` either
    made = tune_callbacks(["wandb", "mlflow"], tmp_path, TrackingConfig(project="pdd"))
    assert made == [("WandbLoggerCallback", {"project": "pdd"}),
                    ("MLflowLoggerCallback", {"tracking_uri": f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}",
                                              "experiment_name": "pdd"})]
    assert os.environ["WANDB_MODE"] == "offline"  # no API key: W&B runs offline
