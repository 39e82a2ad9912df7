"""Exclusive locks on output directories (run directories, expert buffers being built).

A lock is the file ``DIR/.pdd-ray.lock`` holding the holder's pid, host, command
and start time, plus an exclusive ``flock`` on it while held:

* the kernel drops the flock when the holder dies, even by SIGKILL, so a lock file
  whose flock is free is stale and is taken over. On NFS, Linux maps flock onto the
  server's byte-range locks (NLM / NFSv4), so hosts sharing the filesystem see each
  other's locks, and the server frees the lock of a host that died once its lease runs out;
* where the filesystem has no locks (it answers ENOLCK, e.g. NFS mounted ``nolock``), the
  pid/host record decides: a dead pid on this host is stale and taken over; a pid on
  another host cannot be checked, so it counts as alive until someone deletes the file.

flock, unlike POSIX record locks, belongs to the open file, so a second attempt in
the same process is refused as well instead of silently sharing the lock.

The second process gets one line naming the holder (a UserError: exit 2). Releasing
removes the lock file, and the directories the lock created if nothing else was
written into them, so a command that fails before any work leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from pdd_ray.errors import UserError

LOCK_NAME = ".pdd-ray.lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)  # the filesystem does not do flock


@contextmanager
def hold_directory(directory: str | Path, what: str):
    """Hold the lock of ``directory`` (created if missing) for the ``with`` body; ``what``: who holds it."""
    directory = Path(directory)
    created = prepare_directory(directory, what)
    fd = None
    try:
        fd = _acquire(directory / LOCK_NAME, what)
        yield directory
    finally:
        if fd is not None:
            _release(directory / LOCK_NAME, fd)
        _remove_if_empty(created)


def prepare_directory(directory: Path, what: str) -> list[Path]:
    """Create ``directory`` if needed and check it is a writable directory; returns the directories created."""
    missing = [p for p in [directory, *directory.parents] if not p.exists()]
    for p in (directory, *directory.parents):
        if p.exists() and not p.is_dir():
            inside = "" if p == directory else f" (on the way to {directory})"
            raise UserError(f"{what}: {p}{inside} is a file, not a directory; choose another output directory")
        if p.exists():
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what}: cannot create {directory} ({exc.strerror}); choose a writable path") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {directory} is not writable; choose a writable path")
    return missing  # deepest first


def _acquire(path: Path, what: str) -> int:
    """An open descriptor of the lock file, held by this process; a UserError if someone else holds it."""
    for _ in range(5):  # a holder may release (unlink) between our open and our lock: then try again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"{what}: cannot create the lock {path} ({exc.strerror})") from None
        try:
            state = _try_flock(fd)
            holder = _read_record(fd)
            if state == "held" or _alive_elsewhere(holder):
                raise UserError(f"{path.parent} is in use by {_describe(holder)}; wait for it to finish, "
                                f"or use another directory (delete {path} only if that process is gone)")
            if _same_file(path, fd):
                _write_record(fd, what, record_locks=state == "free")
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise UserError(f"{what}: could not take the lock {path} (it keeps changing hands); try again")


def _try_flock(fd: int) -> str:
    """``free`` (we hold it now), ``held`` (another open file does) or ``none`` (no locks on this filesystem)."""
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return "free"
    except OSError as exc:
        if exc.errno in _NO_LOCKS:
            return "none"
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return "held"
        raise


def _alive_elsewhere(holder: dict | None) -> bool:
    """True when the record names a holder that may be alive: a process on this host that exists (this
    process too), or one on another host whose filesystem had no locks."""
    if not holder:
        return False  # empty or unreadable record: a holder that died while writing it
    if holder.get("host") != socket.gethostname():
        # With working locks we only get here when the holder's flock is gone, i.e. it died.
        return holder.get("record_locks") is False
    return _pid_alive(holder.get("pid"))


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_record(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        record = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(fd: int, what: str, record_locks: bool) -> None:
    """Who holds the lock; ``record_locks``: whether others can trust the flock instead of the pid."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
              "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "record_locks": record_locks}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)


def _same_file(path: Path, fd: int) -> bool:
    """True if ``path`` is still the file ``fd`` refers to (a releasing holder may have unlinked it)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (its lock record is empty)"
    return (f"pdd-ray {holder.get('command', '?')} (pid {holder.get('pid')} on host {holder.get('host')}, "
            f"since {holder.get('since', '?')})")


def _release(path: Path, fd: int) -> None:
    """Remove the lock file (if it is still ours) and drop the flock."""
    try:
        if _same_file(path, fd):
            path.unlink()
    except OSError:
        pass  # a read-only remount or a vanished directory: the flock still goes with the descriptor
    finally:
        os.close(fd)


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the directories this lock created, deepest first, as long as they are empty."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return  # something was written there: keep it (and its parents)


__all__ = ["LOCK_NAME", "hold_directory", "prepare_directory"]
