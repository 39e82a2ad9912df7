"""Joining Ray clusters: address handling and fast failures, the `ray up` example, and a real job submission."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from pdd_ray.cli import main
from pdd_ray.cluster import check_reachable, format_cluster, ray_session, resolve_address
from pdd_ray.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = ["num_experts=1", "model.width=4", "model.depth=2", "recipe.epochs=1", "recipe.batch_size=64",
        "data.val_size=40", "device=cpu", "augment.dsa=false"]


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_not_initialised():
    """ray_session reuses an initialised Ray without looking at the address: these tests need none."""
    import ray

    if ray.is_initialized():
        pytest.skip("another test left Ray initialised")


# ---- addresses -----------------------------------------------------------------------------------

def test_address_argument_wins_over_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address("10.0.0.2:6379") == "10.0.0.2:6379"
    assert resolve_address(None) == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", " local ")
    assert resolve_address(None) is None
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(None) is None and resolve_address("") is None


@pytest.mark.parametrize("address,fragment", [
    ("http://127.0.0.1:8265", "dashboard"),
    ("https://head:8265", "dashboard"),
    ("s3://head:6379", "expected host:port"),
    ("head", "needs host:port"),
    ("head:port", "needs host:port"),
    ("ray://head", "needs host:port"),
])
def test_malformed_addresses_are_user_errors(address, fragment):
    with pytest.raises(UserError, match=fragment):
        check_reachable(address)


def test_closed_port_fails_fast():
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach the Ray cluster"):
        check_reachable(f"127.0.0.1:{_free_port()}")
    assert time.monotonic() - start < 5


def test_a_silent_tcp_server_passes_the_check():
    with closing(socket.socket()) as server:  # accepts connections (backlog) and never answers, like gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert check_reachable(f"127.0.0.1:{port}", timeout=0.5) == f"127.0.0.1:{port}"
        assert check_reachable(f"ray://127.0.0.1:{port}", timeout=0.5) == f"127.0.0.1:{port}"


def test_an_http_server_is_recognised_as_the_wrong_port():
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(UserError, match="answers HTTP"):
            check_reachable(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("via_env", [False, True])
def test_ray_session_with_unreachable_address_is_one_user_error(via_env, monkeypatch, ray_not_initialised):
    import ray

    address = f"127.0.0.1:{_free_port()}"
    if via_env:
        monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.monotonic()
    with pytest.raises(UserError, match=f"cannot reach the Ray cluster at '{address}'"):
        with ray_session(None if via_env else address):
            pytest.fail("must not get here")
    assert time.monotonic() - start < 5 and not ray.is_initialized()


def test_without_an_address_a_fresh_local_ray_is_asked_for(monkeypatch, ray_not_initialised):
    import ray

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise ConnectionError("stopped here")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(UserError, match="a local Ray"):
        with ray_session(num_cpus=1):
            pytest.fail("must not get here")
    # "local", not None: ray.init() would join a cluster that `ray start` left on this machine
    assert seen["address"] == "local" and seen["num_cpus"] == 1


def test_experts_command_reports_an_unreachable_cluster_in_one_line(tmp_path, tiny_fashion_root, capsys,
                                                                    monkeypatch, ray_not_initialised):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{_free_port()}"
    argv = ["experts", "--config", "default", "--address", address, f"data.root={tiny_fashion_root}",
            f"out={tmp_path / 'buf'}", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and address in err


def test_format_cluster():
    assert format_cluster(3, 48.0, 4.0) == "3 node(s), 48 CPU, 4 GPU"
    assert format_cluster(1, 2, 0, "127.0.0.1:8265").endswith("dashboard http://127.0.0.1:8265")


# ---- the `ray up` example ------------------------------------------------------------------------

def test_cluster_yaml_has_what_ray_up_needs():
    config = yaml.safe_load((REPO / "tune_configs" / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in config, key
    assert config["provider"]["type"] in ("aws", "gcp")
    assert config["head_node_type"] in config["available_node_types"]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert workers and all("max_workers" in t for t in workers)
    setup = " ".join(config["setup_commands"])
    assert "torch==2.14.1 torchvision==0.29.1" in setup and "-e ~/pdd-ray" in setup
    assert "." in config["file_mounts"].values()


def test_cluster_yaml_matches_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(yaml.safe_load((REPO / "tune_configs" / "cluster.yaml").read_text()), schema)


# ---- a real head and `ray job submit` ------------------------------------------------------------

def _ray_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _ray_env() -> dict:
    # Ray 2.60 turns token auth on for local clusters (and a token in ~/.ray switches clients to it):
    # this throwaway head and its clients agree on none. Never inherit another cluster's address.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def local_head(temp_dir: Path, timeout: float = 90):
    """A Ray head (2 CPUs, dashboard on) in its own process group; yields (gcs_port, dashboard_port)."""
    gcs, dashboard = _free_port(), _free_port()
    ports = {f"--{name}": _free_port() for name in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                    "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                    "metrics-export-port", "node-manager-port",
                                                    "object-manager-port")}
    command = _ray_cli("start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
                       "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                       f"--temp-dir={temp_dir}", "--disable-usage-stats",
                       *(f"{flag}={port}" for flag, port in ports.items()))
    log = open(temp_dir / "head.log", "wb")
    head = subprocess.Popen(command, env=_ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_dashboard(head, dashboard, temp_dir / "head.log", timeout)
        yield gcs, dashboard
    finally:
        _stop_head(head, temp_dir)
        log.close()


def _wait_for_dashboard(head: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard did not come up within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop_head(head: subprocess.Popen, temp_dir: Path) -> None:
    """Stop this head only: its process group, its descendants, and anything naming its temp dir."""
    mine = _descendants(head.pid) | _mentioning(str(temp_dir))
    _signal_group(head.pid, signal.SIGTERM)
    _signal_all(mine, signal.SIGTERM)
    try:
        head.wait(timeout=5)  # `ray start --block` drains for up to 30 s on SIGTERM: do not wait for that
    except subprocess.TimeoutExpired:
        pass
    _signal_group(head.pid, signal.SIGKILL)
    _signal_all(mine | _mentioning(str(temp_dir)), signal.SIGKILL)
    head.wait(timeout=10)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process visible in /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return found


def _descendants(root: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def _mentioning(text: str) -> set[int]:
    return {pid for pid, (_, cmdline) in _processes().items() if text in cmdline and pid != os.getpid()}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the head's processes through /proc")
def test_ray_job_submit_builds_an_expert_buffer_on_a_running_head(tmp_path, tiny_fashion_root):
    pytest.importorskip("aiohttp", reason="ray job submission needs ray[default] (pip install -e '.[test]')")
    # Ray's unix sockets live under the temp dir and must stay under 107 bytes: a short /tmp dir, not tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="pddray-", dir="/tmp"))
    working_dir = tmp_path / "job"
    working_dir.mkdir()
    (working_dir / "README").write_text("pdd_ray itself comes from the editable install\n")
    out = tmp_path / "buffer"
    try:
        with local_head(temp_dir) as (_, dashboard):
            submit = _ray_cli("job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                              "--working-dir", str(working_dir), "--",
                              sys.executable, "-m", "pdd_ray", "experts", "--config", "default", f"out={out}",
                              f"data.root={tiny_fashion_root}", *TINY)
            done = subprocess.run(submit, env=_ray_env(), capture_output=True, text=True, timeout=150)
            logs = done.stdout + done.stderr
            assert done.returncode == 0, logs[-4000:]
            assert "succeeded" in logs and "joined the Ray cluster at" in logs
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not _mentioning(str(temp_dir)), "processes of the test head survived"
    from pdd_ray.trajectories import TrajectoryStore
    assert TrajectoryStore.open(out).completed() == [0]


def _raise_user_error(message: str):
    raise UserError(message)


def _pid() -> int:
    return os.getpid()


@pytest.mark.slow
def test_baseline_and_evaluate_run_as_a_ray_task_when_given_an_address(local_ray, tmp_path,
                                                                       tiny_fashion_root, capsys):
    from pdd_ray.cluster import call_on_cluster
    assert call_on_cluster(_pid, address=local_ray) != os.getpid()  # ran in a Ray worker
    assert call_on_cluster(_pid) == os.getpid()  # no address, no RAY_ADDRESS: right here
    with pytest.raises(UserError, match="^bad root$"):  # one line, not Ray's wrapped traceback
        call_on_cluster(_raise_user_error, "bad root", address=local_ray)
    tiny = ["model.width=8", "eval.runs=1", "eval.epochs=2", "data.val_size=40"]
    out = tmp_path / "coreset"
    assert main(["baseline", "--address", local_ray, "--data-root", str(tiny_fashion_root),
                 "--ipc", "2", "--out", str(out), *tiny]) == 0
    assert main(["evaluate", str(out), "--address", local_ray, "--runs", "1", "--epochs", "2",
                 "model.width=8"]) == 0
    assert "convnet/" in capsys.readouterr().out and (out / "eval.json").is_file()
