"""Connecting to Ray: an existing cluster (``--address`` / ``RAY_ADDRESS``) or a local one started on demand.

Addresses: ``host:port`` (the head's GCS port, 6379 unless changed),
``ray://host:port`` (Ray Client, 10001), ``auto`` (the cluster ``ray start``
last started on this machine). Without an address (or with ``local``) a new
local Ray starts, even on a machine where ``ray start`` ran: joining a
cluster is always asked for. An ``http://`` address is the dashboard, which
only ``ray job submit`` uses (a submitted job gets ``RAY_ADDRESS`` from Ray).

Before ``ray.init`` the address gets a TCP check with a short timeout,
because ``ray.init`` itself keeps retrying an unreachable head for minutes.

A local Ray is private to the command: every process of it (GCS, raylet,
workers, agents) listens on 127.0.0.1 only, token authentication stays as Ray
sets it (on, unless ``RAY_AUTH_MODE=disabled``), and Ray's notice that it
turned token authentication on is not shown. Inside ``command_scope()`` (the
CLI runs every command in one) the first ``ray_session`` starts Ray and later
ones reuse it: one Ray per command, not one per stage.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import types
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

from pdd_ray.errors import UserError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# More than gRPC's 24-byte connection preface, so a GCS rejects it at once instead of waiting for more.
_HTTP_PROBE = b"HEAD / HTTP/1.0\r\nHost: pdd-ray\r\n\r\n"
# Ray's switch that makes a node use the loopback address (meant for single-machine Windows/macOS use):
# with it every server of the local instance binds 127.0.0.1 instead of all interfaces.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_scope: ExitStack | None = None  # set by command_scope(): Ray started in it lives until the command ends


@contextmanager
def command_scope():
    """The span of one command: a Ray that a ``ray_session`` starts in it is stopped only at the end."""
    global _scope
    outer, _scope = _scope, ExitStack()
    try:
        with _scope:
            yield
    finally:
        _scope = outer


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Yield with Ray initialised (joined cluster or new local Ray, said on stderr/log); undo it on exit.

    On exit a joined cluster is only disconnected from; a local Ray this call
    started is stopped. If Ray is already initialised, it is used as is.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = resolve_address(address)
    if address is not None:
        checked = check_reachable(address)
        context = _init(ray, address=address, log_to_driver=True)
        _announce(f"joined the Ray cluster at {checked}: {describe_cluster(context)}")
    else:
        context = _start_local(ray, num_cpus)
        _announce(f"started a local Ray on 127.0.0.1: {describe_cluster(context)}")
    if _scope is not None:
        _scope.callback(ray.shutdown)  # kept for the rest of the command
        yield
        return
    try:
        yield
    finally:
        ray.shutdown()


def _start_local(ray, num_cpus: int | None):
    """A fresh local Ray on loopback only ("local": even where `ray start` ran, which ray.init() would join)."""
    try:  # Ray read the switch when it was imported: set its constant too (private; if it moves, the env is all)
        from ray._private import ray_constants
    except ImportError:
        ray_constants = types.SimpleNamespace()
    previous = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"  # for Ray's own processes, which read it at start
    was = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropTokenNotice()
    auth_log.addFilter(notice)
    try:
        return _init(ray, address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                     _node_ip_address="127.0.0.1")
    finally:
        auth_log.removeFilter(notice)
        ray_constants.ENABLE_RAY_CLUSTER = was
        if previous is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = previous


class _DropTokenNotice(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice: for a private loopback instance it is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def resolve_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``; None (or ``local``) means start a local Ray."""
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    return None if address in ("", "local") else address


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """Fail fast with a UserError unless ``address`` accepts a TCP connection; returns the host:port checked."""
    if address == "auto":
        address = _auto_address()
        if address == "auto":  # Ray's lookup is unavailable: ray.init searches itself
            return address
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            http = _speaks_http(sock, timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot reach the Ray cluster at '{address}' ({reason}, waited at most {timeout:g}s): "
                        "is the head running, and is this its GCS port (6379 unless changed)?") from None
    if http:
        raise UserError(f"'{address}' answers HTTP, so it is not Ray's GCS or client port (a dashboard, which "
                        f"is for 'ray job submit', or a proxy?); use {host}:6379 or ray://{host}:10001")
    return f"{host}:{port}"


def _host_port(address: str) -> tuple[str, int]:
    """Split host:port or ray://host:port into (host, port), refusing other forms."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme in ("http", "https"):
        raise UserError(f"'{address}' is a dashboard (job submission) address: submit with "
                        f"'ray job submit --address {address} -- pdd-ray ...', or give --address / "
                        "RAY_ADDRESS the head's GCS address host:6379")
    if scheme not in ("", "ray"):
        raise UserError(f"Ray address '{address}': expected host:port, ray://host:port, auto or local")
    parts = urlsplit(address if scheme else f"//{address}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parts.hostname or port is None:
        raise UserError(f"Ray address '{address}' needs host:port (the head's GCS port, 6379 unless changed)")
    return parts.hostname, port


def _auto_address() -> str:
    """The GCS address that ``auto`` stands for, found the way ``ray.init`` finds it (``auto`` if unknown)."""
    try:  # a private Ray function: if it moves, skip the check and let ray.init search
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return "auto"
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as exc:
        raise UserError(f"Ray address 'auto': {_first_line(exc)}") from None


def _speaks_http(sock: socket.socket, timeout: float) -> bool:
    """True when the server answers an HTTP/1 request (a dashboard), False for gRPC (GCS, Ray Client)."""
    sock.settimeout(min(timeout, 2.0))
    try:
        sock.sendall(_HTTP_PROBE)
        return sock.recv(5) == b"HTTP/"
    except OSError:  # reset or silence: not an HTTP server
        return False


def _init(ray, **kwargs):
    """``ray.init`` with connection, token and version problems turned into one-line UserErrors."""
    where = "a local Ray" if kwargs["address"] == "local" else kwargs["address"]
    auth_error = getattr(ray.exceptions, "AuthenticationError", ())  # Ray >= 2.52 only
    try:
        return ray.init(**kwargs)
    except ConnectionError as exc:
        raise UserError(f"cannot connect to the Ray cluster at '{where}': {_first_line(exc)}") from None
    except auth_error as exc:
        raise UserError(f"Ray at '{where}' refused the connection ({_first_line(exc)}): set RAY_AUTH_TOKEN "
                        "(see 'ray get-auth-token') or RAY_AUTH_MODE to match the cluster") from None
    except RuntimeError as exc:
        if "version mismatch" not in str(exc).lower():
            raise
        raise UserError(f"Ray at '{where}': {_first_line(exc)}") from None


def describe_cluster(context=None) -> str:
    """One line on the connected cluster: alive nodes, CPUs, GPUs, and the dashboard when ``context`` has it."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    resources = ray.cluster_resources()
    dashboard = getattr(context, "dashboard_url", None)  # ray.init's RayContext; Ray Client has none
    return format_cluster(nodes, resources.get("CPU", 0), resources.get("GPU", 0), dashboard)


def check_fits(cpus: tuple[str, float], gpus: tuple[str, float] = ("", 0.0)) -> None:
    """Refuse a task no alive node can ever place (Ray would wait for it forever), naming the setting and limit.

    ``cpus`` / ``gpus``: (the setting's name, what one task asks for).
    """
    import ray

    if not ray.is_initialized():  # no cluster to measure against (a caller that runs its tasks another way)
        return
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for resource, (key, need) in (("CPU", cpus), ("GPU", gpus)):
        most = max((r.get(resource, 0) for r in nodes), default=0)
        if need > most:
            has = f"{most:g} {resource}s" if most else f"no {resource}"
            raise UserError(f"{key}={need:g} asks for {need:g} {resource}(s) per task, but the largest node of the "
                            f"Ray cluster has {has}: set {key} <= {most:g} or use a cluster with more")


def format_cluster(nodes: int, cpus: float, gpus: float, dashboard: str | None = None) -> str:
    """'2 node(s), 16 CPU, 4 GPU, dashboard http://...' (the dashboard part only when known)."""
    text = f"{nodes} node(s), {cpus:g} CPU, {gpus:g} GPU"
    if dashboard:
        text += f", dashboard {dashboard if '://' in dashboard else 'http://' + dashboard}"
    return text


def _announce(message: str) -> None:
    """Log ``message`` at INFO; print it to stderr instead when nothing would show it (the CLI)."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        print(f"pdd-ray: {message}", file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def call_on_cluster(fn, *args, address: str | None = None):
    """``fn(*args)`` in this process without a cluster address, else as one Ray task on that cluster.

    The task takes one CPU and, when the cluster has GPUs, one GPU: a laptop can run
    ``pdd-ray evaluate --address ...`` on a GPU node. Paths in ``args`` must be absolute
    and reachable from the cluster's nodes.
    """
    if resolve_address(address) is None:
        return fn(*args)
    import ray

    from pdd_ray.errors import user_error_in

    with ray_session(address):
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        try:
            return ray.get(ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(fn).remote(*args))
        except Exception as exc:  # a user mistake met on the cluster still reads as one line
            raise user_error_in(exc) or exc
