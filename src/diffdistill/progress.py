"""Progress of long loops: a live bar on a terminal, sparse INFO log lines everywhere else (no Kedro, no MLflow).

Every loop that can run longer than a few seconds (prior training, encode + inversion, group sampling, generation,
LD3M iterations, expert trajectories, evaluation epochs) reports through one `Progress`:

    with Progress("ld3m dm latent ipc1", total=config.iterations, done=state.step, unit="it") as bar:
        for ...:
            ...
            bar.advance(loss=loss)

- On a terminal (rich's console is a TTY, in the main process) it draws a rich bar on the console Kedro's log
  handler writes to, so log lines scroll above it; bars of nested loops stack and vanish when their loop ends.
- Elsewhere (a pipe, a file, CI, a ParallelRunner worker) it logs an INFO line on the `diffdistill.progress`
  logger when the loop passes a new 10 % mark, but never sooner than `min_interval_s` after the previous line, and
  at least every `heartbeat_s` while steps are slow: a loop shorter than `min_interval_s` prints nothing.
- Either way a loop resumed from a checkpoint says so when it starts, and a loop that ran `min_interval_s` or
  longer logs one closing line (steps, time, last status).

Setting the `diffdistill.progress` logger above INFO turns bars and lines off. Reporting never touches the
computation: callers pass numbers they already hold (no extra device sync), nothing here draws random numbers or
changes a tensor, so the same parameters still give the same bytes. rich is imported only to draw a bar; without
it (a bare machine), progress is logged.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 30.0  # no log line sooner than this after the previous one (or the start)
HEARTBEAT_S = 300.0  # a log line at least this often while a 10 % mark takes longer
MARK = 0.1  # log lines at every 10 % of the total

_lock = threading.Lock()
_live: dict[str, Any] = {"progress": None, "tasks": 0}  # one rich Progress shared by the bars of nested loops


def format_duration(seconds: float) -> str:
    """45s, 3m12s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_status(status: dict[str, Any]) -> str:
    """{"loss": 0.012345, "class": 3} -> "loss=0.01235 class=3"."""
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in status.items())


def _terminal_console() -> Any:
    """rich's console when it draws on a terminal in the main process, else None (then progress is logged)."""
    if multiprocessing.parent_process() is not None:  # worker processes would draw over each other
        return None
    try:
        from rich.console import get_console
    except ImportError:
        return None
    console = get_console()
    return console if console.is_terminal and not console.is_dumb_terminal else None


class Progress:
    """One loop's progress: `total` steps of `unit`, `done` of them finished before this process started (resume).

    `advance(steps, **status)` after each step (status: a few scalars shown beside the bar and in the lines);
    `close()` (or leave the `with` block) when the loop ends, also early. `clock` is for tests.
    """

    def __init__(self, description: str, total: int, *, done: int = 0, unit: str = "steps",
                 min_interval_s: float = MIN_INTERVAL_S, heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total={total!r} must be an int >= 0 (the loop's number of steps)")
        if not 0 <= done <= total:
            raise ValueError(f"done={done!r} must lie in 0..total={total}")
        self.description, self.total, self.done, self.unit = description, total, int(done), unit
        self.min_interval_s, self.heartbeat_s, self._clock = min_interval_s, heartbeat_s, clock
        self.status: dict[str, Any] = {}
        self._started = self._last_line = clock()
        self._resumed_at = self.done
        self._next_mark = self._mark_after(self.done)
        self._closed = False
        self._task: Any = None
        self._enabled = logger.isEnabledFor(logging.INFO)
        if self._enabled and 0 < self.done < total:
            logger.info("%s: resuming at %d/%d %s", description, self.done, total, unit)
        console = _terminal_console() if self._enabled else None
        if console is not None:
            self._start_bar(console)

    # ------------------------------------------------------------------ public
    def advance(self, steps: int = 1, **status: Any) -> None:
        self.done = min(self.total, self.done + int(steps))
        if status:
            self.status.update(status)
        if not self._enabled:
            return
        if self._task is not None:
            self._live_progress().update(self._task, completed=self.done, status=format_status(self.status))
            return
        now = self._clock()
        since = now - self._last_line
        finished = self.done >= self.total  # the closing line reports it
        if not finished and since >= self.min_interval_s and (self.done >= self._next_mark or since >= self.heartbeat_s):
            self._last_line = now
            self._next_mark = self._mark_after(self.done)
            logger.info("%s", self.line(now))

    def skip(self, steps: int) -> None:
        """`steps` finished before this process started (found on resume): counted as done, not in the rate."""
        self._resumed_at += int(steps)
        self.advance(steps)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = self._clock()
        if self._task is not None:
            self._stop_bar()
        if self._enabled and now - self._started >= self.min_interval_s:
            finished = "done" if self.done >= self.total else "stopped"
            status = f"; {format_status(self.status)}" if self.status else ""
            logger.info("%s: %s, %d/%d %s in %s%s", self.description, finished, self.done, self.total, self.unit,
                        format_duration(now - self._started), status)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, now: float | None = None) -> str:
        """The log line of the current state: description, steps, percent, elapsed, estimated time left, status."""
        now = self._clock() if now is None else now
        elapsed = now - self._started
        percent = 100.0 * self.done / self.total if self.total else 100.0
        text = f"{self.description}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), {format_duration(elapsed)}"
        rate = (self.done - self._resumed_at) / elapsed if elapsed > 0 else 0.0
        if rate > 0 and self.done < self.total:
            text += f", ~{format_duration((self.total - self.done) / rate)} left"
        if self.status:
            text += f"; {format_status(self.status)}"
        return text

    # ------------------------------------------------------------------ internals
    def _mark_after(self, done: int) -> int:
        """The first step count past the next 10 % mark after `done`."""
        if self.total == 0:
            return 0
        step = max(1, math.ceil(self.total * MARK))
        return min(self.total, (done // step + 1) * step)

    @staticmethod
    def _live_progress() -> Any:
        return _live["progress"]

    def _start_bar(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        with _lock:
            if _live["progress"] is None:
                _live["progress"] = RichProgress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, transient=True)
                _live["progress"].start()
            _live["tasks"] += 1
            self._task = _live["progress"].add_task(self.description, total=self.total, completed=self.done,
                                                    unit=self.unit, status="")

    def _stop_bar(self) -> None:
        with _lock:
            progress = _live["progress"]
            progress.remove_task(self._task)
            self._task = None
            _live["tasks"] -= 1
            if _live["tasks"] == 0:
                progress.stop()
                _live["progress"] = None
