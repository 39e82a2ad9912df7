"""Progress and console output: a tqdm bar on a terminal, a few plain lines everywhere else.

``progress_bar(...)`` is the one front door for progress in the package. Where
output is a terminal (or a Jupyter kernel) it is a ``tqdm.auto`` bar; where it is
not (a Ray job log, CI, a file) a redrawing bar turns into hundreds of
carriage-return frames and single lines of tens of KB, so there it is a
``LineProgress``: one plain line at most every ``PDD_RAY_PROGRESS_INTERVAL``
seconds (default 30) while work goes on, and one final line.

Environment (read at each bar, so a child process started afterwards sees it too):

    PDD_RAY_PROGRESS=auto|bar|lines|off   auto (default): bar on a terminal, lines otherwise
    PDD_RAY_PROGRESS_INTERVAL=SECONDS     the least time between two plain lines of one bar

``configure_output(quiet, level)`` is what ``--quiet`` / ``--log-level`` do: the level
of the package's log records (summary lines are INFO: one per validation check and
per finished stage) and, with ``quiet``, no progress at all.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Iterable

PROGRESS_ENV = "PDD_RAY_PROGRESS"
INTERVAL_ENV = "PDD_RAY_PROGRESS_INTERVAL"
LOG_LEVEL_ENV = "PDD_RAY_LOG_LEVEL"
PROGRESS_MODES = ("auto", "bar", "lines", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_INTERVAL_S = 30.0
PACKAGE_LOGGER = "pdd_ray"


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, initial: int = 0, leave: bool = True, stream=None):
    """A progress bar with tqdm's everyday methods (``update``, ``set_postfix``, ``close``, iteration, ``with``).

    tqdm on a terminal, a ``LineProgress`` otherwise (see the module docstring); ``disable``
    or ``PDD_RAY_PROGRESS=off``: a bar that shows nothing.
    """
    stream = stream if stream is not None else sys.stderr
    mode = progress_mode(stream)
    if iterable is not None and total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or mode == "off" or mode == "bar":
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable or mode == "off",
                    initial=initial, leave=leave, file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, stream=stream,
                        interval=line_interval())


def progress_mode(stream=None) -> str:
    """``bar``, ``lines`` or ``off``: ``PDD_RAY_PROGRESS``, else bar where ``stream`` is a terminal."""
    mode = os.environ.get(PROGRESS_ENV, "auto").strip().lower()
    if mode in ("bar", "lines", "off"):
        return mode  # anything else is auto (``check_environment`` refuses it up front in the CLI)
    stream = stream if stream is not None else sys.stderr
    interactive = getattr(stream, "isatty", lambda: False)() or "ipykernel" in sys.modules
    return "bar" if interactive else "lines"


def line_interval() -> float:
    """Seconds between two plain lines of one bar (``PDD_RAY_PROGRESS_INTERVAL``, default 30)."""
    try:
        return max(0.0, float(os.environ[INTERVAL_ENV]))
    except (KeyError, ValueError):
        return DEFAULT_INTERVAL_S


class LineProgress:
    """Progress as plain, whole lines: at most one per ``interval`` seconds, then a final one on ``close``.

    ``leave=False`` (short, nested work): the final line only if an earlier line was printed.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True, stream=None,
                 interval: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.leave, self.stream, self.interval, self.clock = initial, leave, stream, interval, clock
        self.postfix = ""
        self._start = self._last = clock()
        self._start_n = initial
        self._printed = 0
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line when ``interval`` seconds passed since the last one."""
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        """Values shown at the end of the next line (``loss=0.12, lr=1e-2``)."""
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """A line when ``interval`` seconds passed since the last one (callers that set ``n`` themselves)."""
        if self.clock() - self._last >= self.interval:
            self._print()

    def close(self) -> None:
        """Print the final line (once)."""
        if self._closed:
            return
        self._closed = True
        if self.leave or self._printed:
            self._print()

    def line(self) -> str:
        """The current state in one line: ``desc: n/total unit (p%), rate, elapsed, postfix``."""
        now = self.clock()
        elapsed = now - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{count} {self.unit}{percent}", f"{rate:.3g} {self.unit}/s", f"{_clock_text(elapsed)} elapsed"]
        if self.postfix:
            parts.append(self.postfix)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _print(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)
        self._last = self.clock()
        self._printed += 1


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def configure_output(quiet: bool = False, level: str = "info") -> None:
    """``--quiet`` / ``--log-level``: the package's log level, on a plain ``message``-only stderr handler.

    ``quiet``: no progress output and only warnings and errors (it wins over a lower ``level``).
    Both are also put in the environment, so Ray workers started from this process behave alike.
    """
    level = level.lower()
    check_environment(level)
    if quiet:
        os.environ[PROGRESS_ENV] = "off"
        level = "warning" if LOG_LEVELS.index(level) < LOG_LEVELS.index("warning") else level
    os.environ[LOG_LEVEL_ENV] = level
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.setLevel(level.upper())
    if not any(getattr(h, "pdd_ray_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.pdd_ray_console = True  # configured once, however often this is called
        logger.addHandler(handler)


def check_environment(level: str = "info") -> None:
    """A UserError for a log level or a ``PDD_RAY_PROGRESS*`` value that means nothing (before any compute)."""
    from pdd_ray.errors import UserError
    if level not in LOG_LEVELS:
        raise UserError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got '{level}'")
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise UserError(f"{PROGRESS_ENV} must be one of {', '.join(PROGRESS_MODES)}, got '{mode}'")
    interval = os.environ.get(INTERVAL_ENV)
    try:
        ok = interval is None or float(interval) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"{INTERVAL_ENV} must be a number of seconds >= 0, got '{interval}'")


def configure_output_from_env() -> None:
    """In a child process (a job run as a Ray task): the output settings its parent's ``configure_output`` made."""
    if LOG_LEVEL_ENV in os.environ:
        configure_output(os.environ.get(PROGRESS_ENV) == "off", os.environ[LOG_LEVEL_ENV])


def summary(message: str, logger: str = PACKAGE_LOGGER) -> None:
    """One summary line (an INFO record): a validation check, a finished stage."""
    logging.getLogger(logger).info(message)


class _Counts:
    """Ray actor body: a count per key (one per job that reports to a progress bar)."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def value(self, key: str) -> int:
        return self.counts.get(key, 0)

    def drop(self, key: str) -> None:
        self.counts.pop(key, None)


_counts_actors: dict[tuple, object] = {}  # (Ray node id, job id) -> this process's counts actor


class TaskCounter:
    """What Ray tasks add to and the driver's progress bar reads: ``add(n)`` in a task, ``value()`` here.

    Progress is cosmetic: once the counts actor is gone (a cluster going down), ``value()``
    keeps its last answer instead of failing the job it reports on.
    """

    def __init__(self, actor, key: str):
        self.actor, self.key, self._last = actor, key, 0

    def add(self, n: int) -> None:
        self.actor.add.remote(self.key, n)

    def value(self) -> int:
        import ray
        try:
            self._last = ray.get(self.actor.value.remote(self.key))
        except ray.exceptions.RayError:
            pass
        return self._last

    def close(self) -> None:
        self.actor.drop.remote(self.key)


def task_counter() -> TaskCounter:
    """A new count on this process's counts actor in the current Ray session.

    An actor is a process of its own, seconds to start, so one serves every count a process
    asks for in a session (this module imports nothing heavy, so it starts quickly too).
    """
    import uuid

    import ray
    context = ray.get_runtime_context()
    session = (context.get_node_id(), context.get_job_id())
    if session not in _counts_actors:
        _counts_actors.clear()  # handles into an earlier session are dead
        _counts_actors[session] = ray.remote(_Counts).options(num_cpus=0).remote()
    return TaskCounter(_counts_actors[session], uuid.uuid4().hex)


__all__ = ["progress_bar", "progress_mode", "LineProgress", "configure_output", "configure_output_from_env",
           "check_environment", "summary", "TaskCounter", "task_counter", "PROGRESS_ENV", "INTERVAL_ENV", "LOG_LEVEL_ENV"]
