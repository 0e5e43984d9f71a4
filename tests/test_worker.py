"""Trials in processes of their own: results, events, stops, errors and deaths come back."""

from __future__ import annotations

import os
import signal
import time

import pytest

from sweep.training import Diverged
from sweep.worker import TrialProcessError, call_in_process


def count_to(report, n: int) -> int:
    for i in range(1, n + 1):
        report(("tick", i))
    return os.getpid()


def fail_with(report, kind: str, message: str) -> None:
    report(("about to fail",))
    raise {"value": ValueError, "diverged": Diverged}[kind](message)


def die(report) -> None:
    report(("dying",))
    os.kill(os.getpid(), signal.SIGKILL)


def interrupt_myself(report) -> str:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    return "still here"


def grow(report, mib: int) -> int:
    block = bytearray(mib * 1024 * 1024)
    return len(block)


def test_events_reach_the_caller_in_order_and_the_result_comes_back() -> None:
    events: list[tuple] = []
    pid, peak = call_in_process(count_to, 5, on_event=events.append)
    assert events == [("tick", i) for i in range(1, 6)]
    assert pid != os.getpid()
    again, _ = call_in_process(count_to, 0)
    assert again != pid  # a fresh process per call
    assert peak > 1


def test_the_peak_memory_is_the_childs_own() -> None:
    _, small = call_in_process(grow, 1)
    size, big = call_in_process(grow, 300)
    assert size == 300 * 1024 * 1024
    assert big - small >= 250


def test_an_exception_in_on_event_stops_the_target_and_is_raised_here() -> None:
    seen: list[int] = []

    def on_event(event: tuple) -> None:
        seen.append(event[1])
        if event[1] == 3:
            raise KeyError("enough")

    with pytest.raises(KeyError, match="enough"):
        call_in_process(count_to, 1000, on_event=on_event)
    assert seen == [1, 2, 3]


def test_errors_come_back_with_the_childs_traceback() -> None:
    with pytest.raises(TrialProcessError, match="^ValueError: bad kernel$") as caught:
        call_in_process(fail_with, "value", "bad kernel")
    assert "fail_with" in caught.value.child_traceback
    with pytest.raises(Diverged, match="^loss became nan at epoch 2$"):
        call_in_process(
            fail_with, "diverged", "loss became nan at epoch 2", rebuild={"Diverged": Diverged}
        )


def test_a_process_that_dies_fails_with_the_signal_named() -> None:
    events: list[tuple] = []
    with pytest.raises(TrialProcessError, match="killed by SIGKILL"):
        call_in_process(die, on_event=events.append)
    assert events == [("dying",)]


def test_ctrl_c_is_left_to_the_sweep_process() -> None:
    # A terminal's Ctrl-C reaches the whole process group; the trial's process ignores it so
    # the sweep records the trial as interrupted instead of as a failed trial.
    assert call_in_process(interrupt_myself)[0] == "still here"
