"""SIGTERM stops a sweep as Ctrl-C does, and a trial's process ends quietly with its caller."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep.signals import StopToken, Terminated, stop_on_signals, stop_reason, watching
from tests.conftest import ROOT, idx_options, write_dataset


def report_then_sleep(report) -> None:
    """A trial target that tells the caller its pid, then trains for a minute without a word."""
    report(os.getpid())
    time.sleep(60)


def report_all_the_time(report) -> None:
    """A trial target that reports every few milliseconds, as a fast epoch loop does."""
    report(os.getpid())
    for _ in range(6000):
        report("tick")
        time.sleep(0.01)


class Command:
    """A process whose merged stdout and stderr are read line by line in a thread."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, *texts: str, timeout: float = 180) -> str:
        """The first line from now on that contains one of `texts`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"ended before {texts}:\n{''.join(self.seen)}"
            self.seen.append(line)
            if any(text in line for text in texts):
                return line

    def rest(self, timeout: float = 60) -> str:
        """Everything printed until the output closes (every process holding it has ended)."""
        self.reader.join(timeout)
        assert not self.reader.is_alive(), "the output is still open"
        self.process.wait(timeout)
        lines = []
        while (line := self.lines.get_nowait()) is not None:
            lines.append(line)
        self.seen += lines
        return "".join(lines)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid`, each with its parent, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        found.update((kid, parent) for kid in children.get(parent, []))
        todo.extend(children.get(parent, []))
    return found


def trial_processes(below: dict[int, int], sweep: int) -> set[int]:
    """The processes below the sweep's own children: the trial processes of its fork server."""
    return {pid for pid, parent in below.items() if parent != sweep}


def gone_within(pids: set[int], seconds: float) -> set[int]:
    """Those of `pids` still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := {p for p in pids if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def stop_handlers() -> Iterator[None]:
    """Install the CLI's stop handlers in this process; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop_on_signals()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_raises_terminated_a_keyboard_interrupt(stop_handlers: None) -> None:
    with pytest.raises(KeyboardInterrupt) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert isinstance(caught.value, Terminated)
    assert stop_reason(caught.value) == "terminated (SIGTERM)"


def test_ctrl_c_still_raises_a_plain_keyboard_interrupt(stop_handlers: None) -> None:
    with pytest.raises(KeyboardInterrupt) as caught:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert not isinstance(caught.value, Terminated)
    assert stop_reason(caught.value) == "interrupted (Ctrl-C)"


def test_a_watched_stop_is_marked_at_once_and_a_deferred_one_raises_only_at_a_check(
    stop_handlers: None,
) -> None:
    token = StopToken()
    with watching(token), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert token.stopped  # the other threads' check() raises now, not after this clean-up
    stop_on_signals()
    token = StopToken()
    with watching(token, deferred=True):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # a store's call in the main thread runs on, uninterrupted
        finished = True
        with pytest.raises(Terminated):
            token.check()
    assert finished


def test_signals_after_the_first_let_the_clean_up_finish(stop_handlers: None, capfd) -> None:
    cleaned = False
    with pytest.raises(Terminated):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            cleaned = True
    assert cleaned
    assert "SIGINT: already stopping" in capfd.readouterr().err


def test_a_third_signal_stops_at_once_without_the_clean_up() -> None:
    code = (
        "import os, signal, time\n"
        "from sweep.signals import stop_on_signals\n"
        "stop_on_signals()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "finally:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    print('clean-up finished')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert "clean-up finished" not in done.stdout
    assert "SIGTERM again: stopping now" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("target", ["report_then_sleep", "report_all_the_time"])
def test_a_trial_process_ends_quietly_soon_after_its_caller_is_killed(target: str) -> None:
    caller = (
        "import sweep.worker as worker\n"
        "worker.PRELOAD = []\n"  # no Keras in the server: the test is about processes
        f"from tests.test_signals import {target}\n"
        "def on_event(event):\n"
        "    if event != 'tick':\n"
        "        print('child', event, flush=True)\n"
        f"worker.call_in_process({target}, on_event=on_event)\n"
    )
    command = Command([sys.executable, "-c", caller])
    child = int(command.wait_for("child", timeout=60).split()[1])
    assert running(child)
    time.sleep(0.3)
    command.process.kill()
    assert not gone_within({child}, 3), "the trial's process outlived its caller"
    printed = command.rest()
    assert printed == "", printed


def sweep_command(tmp_path: Path) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "study: tiny\n"
        "base: {filters: [2, 4], pool_blocks: 2, kernel_size: 3, batch_size: 64,"
        " epochs: 50, patience: 50}\n"
        "params:\n  filters:\n    values: [[2, 4], [4, 8]]\n"
    )
    files = write_dataset(tmp_path / "idx")
    cli = [sys.executable, "-m", "sweep.cli", "--output", str(tmp_path / "out")]
    return [*cli, "run", str(space), "--heartbeat", "0", "--n-trials", "1", *idx_options(files)]


def stopped_trials(out: Path) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Optuna's trial states; each MLflow trial run's status and reason; the parents' status."""
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id], order_by=["attributes.start_time"]
    )
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    return (
        [t.state.name for t in study.trials],
        [(r.info.status, r.data.tags.get("sweep.fail_reason", "")) for r in trials],
        [r.info.status for r in runs if r.data.tags.get("sweep.role") == "study"],
    )


@pytest.mark.slow
def test_sigterm_stops_the_sweep_as_ctrl_c_does_and_a_rerun_continues_at_once(
    tmp_path: Path,
) -> None:
    command = sweep_command(tmp_path)
    sweep = Command(command)
    sweep.wait_for("epoch   1/50")
    below = descendants(sweep.process.pid)
    trials = trial_processes(below, sweep.process.pid)
    sweep.process.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    sweep.process.send_signal(signal.SIGTERM)  # an impatient scheduler: no traceback either
    printed = sweep.rest()
    assert sweep.process.returncode == 128 + signal.SIGTERM, printed
    assert "terminated (SIGTERM): finished trials are kept" in printed
    assert "Traceback" not in printed, printed
    assert trials, f"no trial process below the sweep: {below}"
    assert not gone_within(trials, 1), "the trial's process outlived the sweep"
    assert not gone_within(set(below), 10), "the sweep's fork server outlived it"
    assert stopped_trials(tmp_path / "out") == (
        ["FAIL"],
        [("KILLED", "terminated (SIGTERM)")],
        ["KILLED"],
    )

    rerun = Command(command)
    assert rerun.wait_for("trial 1:", "Waiting for").startswith("[1/1] trial 1:")
    rerun.process.send_signal(signal.SIGINT)
    # Not rest(): a fork server still importing Keras holds the output open until it is done.
    rerun.wait_for("interrupted: finished trials are kept", timeout=60)
    assert rerun.process.wait(60) == 130
    assert stopped_trials(tmp_path / "out")[0] == ["FAIL", "FAIL"]


@pytest.mark.slow
def test_a_killed_sweeps_trial_process_ends_quietly_within_seconds(tmp_path: Path) -> None:
    sweep = Command(sweep_command(tmp_path))
    sweep.wait_for("epoch   1/50")
    below = descendants(sweep.process.pid)
    trials = trial_processes(below, sweep.process.pid)
    assert trials, f"no trial process below the sweep: {below}"
    sweep.process.kill()
    assert not gone_within(trials, 5), "the trial's process outlived the sweep"
    printed = sweep.rest()
    assert "Traceback" not in printed and "Error" not in printed, printed
