"""diffdistill.progress: sparse log lines off a terminal, a rich bar on one, and never a change to what loops compute."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from diffdistill import progress
from diffdistill.distill.d3hr import ClassGaussians, select_class_groups
from diffdistill.progress import Progress, format_duration

LOGGER = "diffdistill.progress"


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(progress, "_terminal_console", lambda: None)  # as in a pipe, a file, CI
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_long_loop_logs_at_ten_percent_marks_no_sooner_than_the_interval(logged) -> None:
    clock = Clock()
    with Progress("prior autoencoder", 100, clock=clock) as bar:
        for _ in range(100):
            clock.now += 1.0  # one second per step: 100 s in all
            bar.advance(loss=0.5)
    assert lines(logged) == [
        "prior autoencoder: 30/100 steps (30%), 30s, ~1m10s left; loss=0.5",
        "prior autoencoder: 60/100 steps (60%), 1m00s, ~40s left; loss=0.5",
        "prior autoencoder: 90/100 steps (90%), 1m30s, ~10s left; loss=0.5",
        "prior autoencoder: done, 100/100 steps in 1m40s; loss=0.5",
    ]


def test_a_loop_shorter_than_the_interval_logs_nothing(logged) -> None:
    clock = Clock()
    with Progress("d3hr generation", 50, unit="images", clock=clock) as bar:
        for _ in range(50):
            clock.now += 0.5
            bar.advance()
    assert lines(logged) == []


def test_slow_steps_still_get_a_heartbeat_line(logged) -> None:
    clock = Clock()
    bar = Progress("ld3m dc latent ipc10", 5000, unit="it", clock=clock)
    for _ in range(4):  # 100 s per iteration: the first 10 % mark is 500 iterations away
        clock.now += 100.0
        bar.advance(loss=1.25)
    assert lines(logged) == ["ld3m dc latent ipc10: 3/5000 it (0%), 5m00s, ~138h48m left; loss=1.25"]
    bar.close()
    assert lines(logged)[-1] == "ld3m dc latent ipc10: stopped, 4/5000 it in 6m40s; loss=1.25"


def test_a_resumed_loop_says_so_and_estimates_from_its_own_steps(logged) -> None:
    clock = Clock()
    with Progress("experts (convnet)", 100, done=40, unit="epochs", clock=clock) as bar:
        for _ in range(30):
            clock.now += 2.0
            bar.advance()
        assert bar.line() == "experts (convnet): 70/100 epochs (70%), 1m00s, ~1m00s left"
    assert lines(logged)[0] == "experts (convnet): resuming at 40/100 epochs"


def test_skipped_steps_count_as_done_but_not_in_the_rate(logged) -> None:
    clock = Clock()
    bar = Progress("evaluate random_ipc1", 10, unit="runs", clock=clock)
    bar.skip(5)  # five runs found finished in the work directory
    clock.now += 40.0
    bar.advance()
    assert bar.line() == "evaluate random_ipc1: 6/10 runs (60%), 40s, ~2m40s left"


def test_progress_above_info_is_off(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    monkeypatch.setattr(progress, "_terminal_console", lambda: drawn.append(1))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    with Progress("train convnet seed 0", 10, done=3, clock=clock) as bar:
        for _ in range(7):
            clock.now += 60.0
            bar.advance()
    assert lines(caplog) == [] and drawn == []  # no line, not even a console looked up


def test_on_a_terminal_nested_loops_share_one_bar_display(caplog, monkeypatch) -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    monkeypatch.setattr(progress, "_terminal_console", lambda: console)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("evaluate herding_ipc1", 2, unit="runs") as outer:
        live = progress._live["progress"]
        for _ in range(2):
            with Progress("train convnet seed 0", 3, unit="epochs") as inner:
                assert progress._live["progress"] is live and progress._live["tasks"] == 2
                for _ in range(3):
                    inner.advance()
                live.refresh()
            outer.advance(last="convnet seed 0 91.0%")
        live.refresh()
        text = out.getvalue()
    assert "evaluate herding_ipc1" in text and "train convnet seed 0" in text and "3/3" in text
    assert "last=convnet seed 0 91.0%" in text
    assert progress._live == {"progress": None, "tasks": 0}  # the display stops with the last bar
    assert lines(caplog) == []  # short loops: the bar was the whole report


def test_bad_totals_are_refused() -> None:
    with pytest.raises(ValueError, match=r"total=-1 must be an int >= 0"):
        Progress("x", -1)
    with pytest.raises(ValueError, match=r"done=5 must lie in 0..total=4"):
        Progress("x", 4, done=5)


def test_durations_read_as_minutes_and_hours() -> None:
    assert [format_duration(s) for s in (0.4, 59.6, 61, 3599, 3600, 7530)] == ["0s", "1m00s", "1m01s", "59m59s",
                                                                              "1h00m", "2h05m"]


def _groups() -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    mean = torch.randn(4, 2, 2, 2, generator=generator, dtype=torch.float64).flatten(1)
    var = torch.rand(4, 8, generator=generator, dtype=torch.float64) + 0.5
    gaussians = ClassGaussians(mean=mean, var=var, counts=torch.full((4,), 20), sample_shape=(2, 2, 2))
    return select_class_groups(gaussians, {"m": 64, "weights": [1.0, 1.0, 0.5], "chunk_size": 16, "seed": 7}, ipc=3)


def test_reporting_never_changes_what_a_loop_computes(caplog, monkeypatch) -> None:
    from rich.console import Console

    caplog.set_level(logging.WARNING, logger=LOGGER)
    quiet = _groups()
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(progress, "_terminal_console", lambda: Console(file=io.StringIO(), force_terminal=True))
    with_bar = _groups()
    assert with_bar == quiet
