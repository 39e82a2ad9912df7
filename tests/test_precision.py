"""Compute precision: ``auto`` resolution (simulated hardware), the recorded choice, bf16 against fp32."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pdd_ray.errors import UserError
from pdd_ray.evaluation import EvalProtocol
from pdd_ray.models import create_model
from pdd_ray.precision import (autocast, cpu_flags, has_fast_bf16, record_precision, resolve_precision,
                                settle_precision)
from pdd_ray.train.loop import accuracy, train_epoch
from tests.distill.test_mtt import ITEM, make_matcher, make_state

AMX = frozenset({"fpu", "avx512f", "amx_tile", "amx_bf16"})
AVX512_BF16 = frozenset({"fpu", "avx512f", "avx512_bf16"})
PLAIN = frozenset({"fpu", "sse2", "avx2", "avx512f"})


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize("flags, expected", [(AMX, "bf16"), (AVX512_BF16, "bf16"), (PLAIN, "fp32"),
                                             (frozenset(), "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_multiplies_it_natively(flags, expected):
    assert resolve_precision("auto", "cpu", flags) == expected
    assert has_fast_bf16("cpu", flags) == (expected == "bf16")


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept_whatever_the_hardware(setting):
    for flags in (AMX, PLAIN):
        assert resolve_precision(setting, "cpu", flags) == setting


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda:0") == expected


def test_auto_on_cuda_without_a_gpu_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "cuda") == "fp32"


def test_unknown_or_unresolved_precision_is_refused():
    with pytest.raises(UserError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolved"):
        autocast("auto", "cpu")


def test_a_run_keeps_the_precision_it_started_with(tmp_path):
    record = tmp_path / "run" / "precision.json"
    assert settle_precision("bf16", "cpu", record) == "bf16"
    assert not record.exists()  # settling writes nothing: a run refused before compute leaves no file
    record_precision(record, "bf16", "cpu")
    assert json.loads(record.read_text())["precision"] == "bf16"
    record_precision(record, "fp32", "cpu")  # a resume never rewrites it
    assert json.loads(record.read_text())["precision"] == "bf16"
    assert settle_precision("auto", "cpu", record) == "bf16"  # resumed anywhere: what it started with
    assert settle_precision("bf16", "cpu", record) == "bf16"
    with pytest.raises(UserError, match="started with precision=bf16"):
        settle_precision("fp32", "cpu", record)
    record.write_text("not json")
    with pytest.raises(UserError, match="does not name a precision"):
        settle_precision("auto", "cpu", record)
    with pytest.raises(ValueError, match="resolved"):
        record_precision(tmp_path / "other.json", "auto", "cpu")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_mtt_bf16_gradients_agree_with_fp32_within_tolerance(tmp_path):
    """Stated tolerance: image-gradient cosine >= 0.99, loss within 2 %, lr gradient within 10 %, all fp32 out."""
    state = make_state(dtype=torch.float32)
    fp32 = make_matcher(tmp_path / "a").contribution(state, ITEM)
    matcher = make_matcher(tmp_path / "b")
    matcher.precision = "bf16"
    bf16 = matcher.contribution(state, ITEM)
    assert bf16.grad_images.dtype == torch.float32 and bf16.grad_lr.dtype == torch.float32
    assert not torch.equal(bf16.grad_images, fp32.grad_images)  # the bf16 path really ran
    assert _cosine(bf16.grad_images, fp32.grad_images) >= 0.99
    assert abs(bf16.loss - fp32.loss) <= 0.02 * abs(fp32.loss)
    assert abs(float(bf16.grad_lr - fp32.grad_lr)) <= 0.1 * abs(float(fp32.grad_lr))


def test_bf16_training_keeps_fp32_parameters_and_tracks_fp32(tiny_separable):
    images, labels = tiny_separable.images, tiny_separable.labels
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("convnet", images.shape[1], int(labels.max()) + 1, images.shape[-1], width=8, depth=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = [train_epoch(model, images, labels, optimizer, 32, generator=torch.Generator().manual_seed(0),
                              precision=precision) for _ in range(3)]
        assert all(p.dtype == torch.float32 for p in model.parameters())
        results[precision] = (losses, accuracy(model, images, labels, precision=precision))
    (fp32_losses, fp32_acc), (bf16_losses, bf16_acc) = results["fp32"], results["bf16"]
    assert fp32_losses != bf16_losses  # not silently the fp32 path
    assert bf16_losses[-1] < bf16_losses[0]
    assert abs(bf16_acc - fp32_acc) <= 0.1


def test_the_protocol_says_when_it_computes_in_bf16():
    assert "bf16" not in EvalProtocol().describe()  # fp32: the sentence earlier result files carry
    assert "compute: bf16 autocast" in EvalProtocol(precision="bf16").describe()
