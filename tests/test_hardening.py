"""Hostile and careless use: locked directories, untrusted sets and buffers, loopback Ray, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pdd_ray import synset as synset_io
from pdd_ray.cli import main
from pdd_ray.data.preprocess import Preprocessor
from pdd_ray.distill.divergence import EXIT_DIVERGED, divergence
from pdd_ray.distill.mtt import MTTConfig, MTTMatcher
from pdd_ray.errors import UserError
from pdd_ray.locking import LOCK_NAME, hold_directory
from pdd_ray.models import FlatForward
from pdd_ray.trajectories import TrajectoryStore
from tests.distill.test_mtt import make_store, tiny_model

HOLD = textwrap.dedent("""
    import sys
    from pdd_ray.locking import hold_directory
    with hold_directory(sys.argv[1], sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes our stdin (or kills us)
""")


SWEEP_CONFIG = Path(__file__).parents[1] / "tune_configs" / "sweep_stages_x_ipc_fashion_mnist.yaml"


@pytest.fixture
def holder(tmp_path, request):
    """A second process holding the lock of ``tmp_path / 'out'`` as command ``request.param`` (default run).

    Yields (process, directory).
    """
    out = tmp_path / "out"
    command = getattr(request, "param", "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), command], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc, out
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- locks

@pytest.mark.parametrize("command", [["run", "--config", "default", "experts.recipe.epochs=22"],
                                     ["experts", "--config", "default"],
                                     ["distill", "--config", "default", "experts.recipe.epochs=22"]])
def test_a_second_process_on_the_same_directory_gets_one_line_naming_the_holder(holder, command):
    proc, out = holder
    res = subprocess.run([sys.executable, "-m", "pdd_ray", *command, "--out", str(out)], capture_output=True,
                         text=True, timeout=300)
    _assert_refused_naming(res, proc, out, "run")


@pytest.mark.parametrize("holder", ["sweep"], indirect=True)
def test_a_second_sweep_into_the_same_directory_gets_one_line_naming_the_holder(holder):
    """A sweep takes its directory's lock after checking its trials and before Ray: a running sweep keeps it."""
    proc, out = holder
    res = subprocess.run([sys.executable, "-m", "pdd_ray", "sweep", "--config", str(SWEEP_CONFIG), f"out={out}"],
                         capture_output=True, text=True, timeout=300)
    _assert_refused_naming(res, proc, out, "sweep")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the refused sweep written


def _assert_refused_naming(res: subprocess.CompletedProcess, proc: subprocess.Popen, out: Path, command: str):
    """Exit 2 and one line naming the holder (its command, pid and host); the holder keeps its lock."""
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"in use by pdd-ray {command} (pid {proc.pid} on host {socket.gethostname()}" in lines[0]
    assert proc.poll() is None and (out / LOCK_NAME).is_file()


def test_a_lock_whose_holder_was_killed_is_taken_over(holder):
    proc, out = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid  # the dead holder's record is still there
    with hold_directory(out, "run"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_a_record_lock_free_file_naming_a_dead_pid_here_is_stale(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "command": "run", "record_locks": False}))
    with hold_directory(out, "run"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_holder_on_another_host_without_record_locks_counts_as_alive(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "sweep",
                                             "record_locks": False}))
    with pytest.raises(UserError, match="pid 1 on host elsewhere.example"):
        with hold_directory(out, "run"):
            pytest.fail("must not get here")


def test_holding_twice_in_one_process_is_refused(tmp_path):
    with hold_directory(tmp_path / "out", "run"):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            with hold_directory(tmp_path / "out", "experts"):
                pytest.fail("must not get here")


def test_releasing_leaves_nothing_when_nothing_was_written(tmp_path):
    with hold_directory(tmp_path / "a" / "b", "run"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()
    assert list(tmp_path.iterdir()) == []
    with hold_directory(tmp_path / "kept", "run") as directory:
        (directory / "result.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["result.json"]


# ---------------------------------------------------------------- untrusted synthetic sets

def _tiny_set(directory: Path, stages: int = 2) -> Path:
    gen = torch.Generator().manual_seed(0)
    parts = [synset_io.Stage(torch.randn(4, 1, 8, 8, generator=gen), torch.arange(4), lr=0.01, info={"factor": 1})
             for _ in range(stages)]
    synset = synset_io.SyntheticSet("fashion_mnist", 4, ("a", "b", "c", "d"), Preprocessor([0.5], [0.25]), parts)
    return synset_io.save(synset, directory)


def _edit_manifest(directory: Path, edit) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _edit_stage(directory: Path, edit, k: int = 1) -> None:
    path = directory / f"stage_{k}.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _outside_file(directory: Path, name: str) -> str:
    """A valid stage file outside the set, the kind a manifest could point at."""
    target = directory.parent / name
    target.write_bytes((directory / "stage_1.safetensors").read_bytes())
    return str(target)


def _symlink_out(directory: Path) -> None:
    target = _outside_file(directory, "elsewhere.safetensors")
    (directory / "stage_1.safetensors").unlink()
    (directory / "stage_1.safetensors").symlink_to(target)


def _set_stage(key, value, k: int = 0):
    return lambda m: m["stages"][k].__setitem__(key, value)


TRAVERSALS = {
    "parent directory": lambda d: _edit_manifest(d, _set_stage("file", "../" + Path(
        _outside_file(d, "outside.safetensors")).name)),
    "absolute path": lambda d: _edit_manifest(d, _set_stage("file", _outside_file(d, "abs.safetensors"))),
    "preprocessing outside": lambda d: _edit_manifest(d, lambda m: m["preprocessing"].__setitem__(
        "file", "../" + d.name + "/preprocess.safetensors")),
    "symlink leaving the directory": _symlink_out,
}

TENSOR_CASES = {
    "image shape differs across stages": (lambda d: _edit_stage(d, lambda t: t.__setitem__(
        "images", torch.randn(4, 1, 4, 4)), k=2), "image_shape"),
    "count differs from the manifest": (lambda d: _edit_manifest(d, _set_stage("count", 5)), "manifest count 5"),
    "labels past the last class": (lambda d: _edit_stage(d, lambda t: t.__setitem__(
        "labels", torch.tensor([0, 1, 2, 4]))), "labels must lie in [0, 4)"),
    "negative labels": (lambda d: _edit_stage(d, lambda t: t.__setitem__("labels", torch.tensor([0, 1, 2, -1]))),
                        "labels must lie in [0, 4)"),
    "float labels": (lambda d: _edit_stage(d, lambda t: t.__setitem__("labels", torch.zeros(4))), "int64"),
    "no classes": (lambda d: _edit_manifest(d, lambda m: m.__setitem__("num_classes", 0)), "num_classes"),
    "a billion classes": (lambda d: _edit_manifest(d, lambda m: m.__setitem__("num_classes", 10**9)),
                          "num_classes"),
    "infinite lr": (lambda d: _edit_manifest(d, _set_stage("lr", float("inf"))), "lr must be finite and > 0"),
    "negative lr": (lambda d: _edit_manifest(d, _set_stage("lr", -0.01)), "lr must be finite and > 0"),
    "zero factor": (lambda d: _edit_manifest(d, _set_stage("factor", 0)), "factor must be an integer"),
    "huge factor": (lambda d: _edit_manifest(d, _set_stage("factor", 1000)), "factor must be an integer"),
    "fractional factor": (lambda d: _edit_manifest(d, _set_stage("factor", 1.5)), "factor must be an integer"),
    "NaN images": (lambda d: _edit_stage(d, lambda t: t["images"].__setitem__((0, 0, 0, 0), float("nan"))),
                   "NaN or inf"),
    "missing tensor": (lambda d: _edit_stage(d, lambda t: t.pop("labels")), "needs tensors"),
}


@pytest.mark.parametrize("case", sorted(TRAVERSALS))
def test_a_manifest_naming_files_outside_its_directory_is_refused(tmp_path, case, capsys):
    directory = _tiny_set(tmp_path / "set")
    TRAVERSALS[case](directory)
    with pytest.raises(UserError, match="plain file name|outside"):
        synset_io.load(directory)
    out = tmp_path / "export.parquet"
    assert main(["export", str(directory), "--out", str(out)]) == 2
    assert main(["evaluate", str(directory)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_tensors_are_checked_against_the_manifest(tmp_path, case, capsys):
    directory = _tiny_set(tmp_path / "set")
    edit, fragment = TENSOR_CASES[case]
    edit(directory)
    with pytest.raises(UserError) as caught:
        synset_io.load(directory)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert main(["export", str(directory)]) == 2 and not (directory / "synthetic.parquet").exists()


def test_an_intact_set_still_loads(tmp_path):
    loaded = synset_io.load(_tiny_set(tmp_path / "set"))
    assert [len(s.labels) for s in loaded.stages] == [4, 4]


# ---------------------------------------------------------------- untrusted expert buffers

def test_a_truncated_expert_is_refused_or_skipped_when_asked(tmp_path):
    model = tiny_model()
    store = make_store(tmp_path / "store", model, experts=3)
    path = tmp_path / "store" / store.info(1)["file"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    config = dict(syn_steps=2, expert_epochs=1, max_start_epoch=1)
    with pytest.raises(UserError, match=r"expert\(s\) 1 of .* missing or truncated.*skip_damaged_experts"):
        MTTMatcher(MTTConfig(**config), TrajectoryStore.open(tmp_path / "store"), FlatForward(model))
    matcher = MTTMatcher(MTTConfig(**config, skip_damaged_experts=True), TrajectoryStore.open(tmp_path / "store"),
                         FlatForward(model))
    assert matcher.experts == [0, 2] and matcher.skipped_experts == [1]


def test_an_expert_file_outside_the_buffer_is_refused(tmp_path):
    model = tiny_model()
    make_store(tmp_path / "store", model)
    _edit_manifest(tmp_path / "store", lambda m: m["experts"]["0"].__setitem__("file", "../elsewhere.arrow"))
    with pytest.raises(UserError, match="plain file name"):
        TrajectoryStore.open(tmp_path / "store").completed()


def test_inspect_verify_shows_the_layout_a_file_disagrees_with(tmp_path, capsys):
    model = tiny_model()
    make_store(tmp_path / "store", model)
    # Same tensor names, one shape changed: the manifest's layout no longer describes the files.
    _edit_manifest(tmp_path / "store", lambda m: m["layout"]["shapes"].__setitem__(0, [99, 1, 3, 3]))
    assert main(["experts", "inspect", str(tmp_path / "store"), "--verify"]) == 1
    printed = capsys.readouterr().out
    problems = [line for line in printed.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2 and "[99, 1, 3, 3]" in problems[0] and "numel" in problems[0]


def test_a_layout_mismatch_names_the_differing_tensors(tmp_path):
    model = tiny_model()
    store = make_store(tmp_path / "store", model)
    names = list(store.layout.names)
    _edit_manifest(tmp_path / "store", lambda m: m["layout"]["names"].__setitem__(0, "renamed.weight"))
    with pytest.raises(UserError) as caught:  # same parameter count, different names: say which
        MTTMatcher(MTTConfig(syn_steps=2, expert_epochs=1, max_start_epoch=1),
                   TrajectoryStore.open(tmp_path / "store"), FlatForward(model))
    assert "renamed.weight" in str(caught.value) and names[0] in str(caught.value)


# ---------------------------------------------------------------- a local Ray is private

def _listening(pids: set[int]) -> list[tuple[str, int]]:
    import psutil  # ships with Ray (ray/thirdparty_files, on sys.path once ray is imported)
    return [(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_local_ray_listens_on_loopback_only_and_starts_once_per_command():
    import ray
    import psutil
    from pdd_ray.cluster import command_scope, ray_session

    if ray.is_initialized():
        pytest.skip("needs to start its own Ray")
    notices = _Records()  # on Ray's own logger: it does not propagate to pytest's capture
    logging.getLogger("ray._private.authentication.authentication_token_setup").addHandler(notices)
    with command_scope():
        with ray_session(num_cpus=1):
            assert ray.get(ray.remote(lambda: os.getpid()).remote()) > 0  # a worker is up
            pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
            sockets = _listening(pids)
        with ray_session(num_cpus=1):  # a later stage of the same command: the same Ray
            assert ray.is_initialized()
        assert ray.is_initialized()
    assert not ray.is_initialized()
    assert len(sockets) >= 3  # GCS, raylet, the workers' and agents' servers
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _ in sockets), sockets
    logging.getLogger("ray._private.authentication.authentication_token_setup").removeHandler(notices)
    assert not any("Token authentication is enabled" in m for m in notices.messages)


@pytest.mark.parametrize("mode", [None, "disabled", "token"])
def test_a_local_ray_leaves_token_auth_as_ray_and_the_user_set_it(monkeypatch, mode):
    """What pdd-ray hands ``ray.init`` for its private Ray: RAY_AUTH_MODE as the user left it, no auth setting.

    Ray turns token auth on for a new local instance when RAY_AUTH_MODE is unset, so leaving it alone
    keeps auth on by default and off only where the user set ``disabled``.
    """
    from pdd_ray import cluster

    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    seen = {}

    def fake_init(ray, **kwargs):
        seen.update(kwargs=kwargs, mode=os.environ.get("RAY_AUTH_MODE"))
        return "context"

    monkeypatch.setattr(cluster, "_init", fake_init)
    assert cluster._start_local(object(), num_cpus=1) == "context"
    assert seen["mode"] == mode and os.environ.get("RAY_AUTH_MODE") == mode
    assert seen["kwargs"]["address"] == "local"  # a new instance: the case Ray's default-on rule covers
    assert not any("auth" in key.lower() for key in seen["kwargs"])
    assert not any("auth" in str(key).lower() for key in seen["kwargs"].get("_system_config") or {})


# ---------------------------------------------------------------- bad input

FAST = ["data.val_size=40", "experts.recipe.epochs=2", "mtt.max_start_epoch=1", "mtt.expert_epochs=1",
        "model.width=4", "device=cpu"]
BUFFER = ["data.val_size=40", "recipe.epochs=2", "model.width=4", "device=cpu", "num_experts=1"]


def _bad_inputs(tmp_path: Path, data_root: Path) -> dict[str, list[str]]:
    out = str(tmp_path / "out")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory\n")
    sset = str(_tiny_set(tmp_path / "set"))
    run = ["run", "--config", "default", "--data-root", str(data_root), "--out", out, *FAST]
    return {
        "binary config": ["run", "--config", str(binary), "--out", out],
        "out is a file": ["run", "--config", "default", "--data-root", str(data_root), "--out", str(a_file), *FAST],
        "out cannot be created": ["run", "--config", "default", "--data-root", str(data_root), "--out",
                                  "/proc/pdd-ray-out", *FAST],
        "export to a missing directory": ["export", sset, "--out", str(tmp_path / "no" / "such" / "x.parquet")],
        "export to an unwritable place": ["export", sset, "--out", "/proc/x.parquet"],
        "export onto a directory": ["export", sset, "--out", str(tmp_path)],
        "model.width=1e9": [*run, "model.width=1000000000"],
        "model.width=1e9 written as 1e9": [*run, "model.width=1e9"],
        "stages.ipc=1000000": [*run, "stages.ipc=1000000"],
        "more ipc than a class has": [*run, "stages.ipc=50"],
        "experts.num_experts=1e9": [*run, "experts.num_experts=1000000000"],
        "mtt.lr_img=inf": [*run, "mtt.lr_img=inf"],
        "eval.lr=inf": [*run, "eval.lr=inf"],
        "stages.lr_min=nan": [*run, "stages.lr_min=nan"],
        "run against a dead head": [*run, "--address", f"127.0.0.1:{_free_port()}"],
        "experts against a dead head": ["experts", "--config", "default", "--data-root", str(data_root), "--out",
                                        out, *BUFFER, "--address", f"127.0.0.1:{_free_port()}"],
    }


def _bad_inputs_on_ray(tmp_path: Path, data_root: Path) -> dict[str, list[str]]:
    experts = ["experts", "--config", "default", "--data-root", str(data_root), "--out", str(tmp_path / "out"),
               *BUFFER]
    return {"experts.cpus_per_expert=64 on 2 CPUs": [*experts, "cpus_per_expert=64"],
            "gpus_per_expert=1 without a GPU": [*experts, "gpus_per_expert=1"],
            "run with gpus_per_expert=1 without a GPU": ["run", "--config", "default", "--data-root", str(data_root),
                                                         "--out", str(tmp_path / "out"), *FAST,
                                                         "experts.gpus_per_expert=1"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_refused(argv: list[str], root: Path, capsys) -> None:
    before = _files(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err, err
    assert _files(root) == before  # nothing written (and nothing left behind, not even an empty out/experts/)
    assert not (root / "out").exists()


BAD_CASES = ["binary config", "out is a file", "out cannot be created", "export to a missing directory",
             "export to an unwritable place", "export onto a directory", "model.width=1e9",
             "model.width=1e9 written as 1e9", "stages.ipc=1000000", "more ipc than a class has",
             "experts.num_experts=1e9", "mtt.lr_img=inf", "eval.lr=inf", "stages.lr_min=nan",
             "run against a dead head", "experts against a dead head"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, tiny_fashion_root, capsys):
    import ray
    if ray.is_initialized():
        pytest.skip("a running Ray would be used instead of the dead head")
    work = tmp_path / "work"
    work.mkdir()
    _assert_refused(_bad_inputs(work, tiny_fashion_root)[case], work, capsys)


@pytest.mark.parametrize("case", ["experts.cpus_per_expert=64 on 2 CPUs", "gpus_per_expert=1 without a GPU",
                                  "run with gpus_per_expert=1 without a GPU"])
def test_requests_the_cluster_cannot_place_fail_before_compute(case, tmp_path, tiny_fashion_root, local_ray,
                                                               capsys):
    # local_ray before capsys: Ray's log handlers bind the stderr of the moment it starts, which must not be
    # this test's captured stream (closed after it: "I/O operation on closed file" in later tests).
    argv = _bad_inputs_on_ray(tmp_path, tiny_fashion_root)[case]
    _assert_refused(argv, tmp_path, capsys)


def test_bad_input_table_is_complete(tmp_path, tiny_fashion_root):
    assert sorted(BAD_CASES) == sorted(_bad_inputs(tmp_path, tiny_fashion_root))


# ---------------------------------------------------------------- divergence

def _stage(images, lr=0.01, skipped=0):
    return synset_io.Stage(images, torch.arange(len(images)) % 2, lr, {"skipped_nonfinite": skipped})


def test_divergence_signs():
    fine = _stage(torch.randn(4, 1, 8, 8))
    assert divergence([fine], iterations=10) == []
    assert "all 10 updates" in divergence([fine, _stage(torch.randn(4, 1, 8, 8), skipped=10)], 10)[0]
    assert "stage 2: images reached" in divergence([fine, _stage(torch.full((4, 1, 8, 8), 1e12))], 10)[0]
    assert "learned lr 1e+30" in divergence([_stage(torch.randn(4, 1, 8, 8), lr=1e30)], 10)[0]
    assert "NaN or inf" in divergence([_stage(torch.full((4, 1, 8, 8), float("nan")))], 10)[0]


TINY_RUN = ["model.width=4", "model.depth=2", "data.val_size=40", "device=cpu", "augment.dsa=false",
            "stages.num_stages=1", "stages.ipc=1", "stages.iterations=2", "stages.eval_every=2",
            "stages.eval_epochs=1", "stages.checkpoint_every=2", "mtt.syn_steps=2", "mtt.expert_epochs=1",
            "mtt.max_start_epoch=1", "experts.num_experts=1", "experts.recipe.epochs=2",
            "experts.recipe.batch_size=64", "eval.runs=1", "eval.epochs=1", "stages.val_nets=1"]


@pytest.mark.slow
def test_a_diverging_run_says_so_and_derived_files_come_back_on_resume(tmp_path, tiny_fashion_root, capsys,
                                                                       local_ray):
    out = tmp_path / "run"
    argv = ["run", "--config", "default", "--data-root", str(tiny_fashion_root), "--out", str(out), *TINY_RUN,
            "mtt.lr_teacher=1e30"]
    assert main(argv) == EXIT_DIVERGED
    assert "diverged: stage 1" in capsys.readouterr().err
    assert "**Diverged**" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["diverged"]
    # As if killed between writing the stage and its grid, and before the report.
    (out / "synthetic" / "stage_1.png").unlink()
    (out / "report.md").unlink()
    assert main(argv) == EXIT_DIVERGED
    assert (out / "synthetic" / "stage_1.png").is_file() and (out / "report.md").is_file()
    assert not (out / LOCK_NAME).exists()
