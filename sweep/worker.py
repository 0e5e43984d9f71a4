"""Run a trial's training in a process of its own.

TensorFlow keeps memory from every model a process has trained, even after
`keras.backend.clear_session()` and the graph clean-up in sweep.training.release:
benchmarks/memory.py measured the resident set growing by 24% over 20 trials in one process.
A process per trial hands all of it back to the system when the trial ends, and a trial that
kills its process (out of memory, a native crash) fails alone instead of ending the study.

The processes fork from a server (multiprocessing's "forkserver") that imported Keras and its
backend once, without touching any device, so a trial's process starts in a fraction of a
second rather than the seconds a TensorFlow import takes.

The target runs as `target(report, *args)`; `report(event)` hands `event` to the caller's
`on_event` and returns once it has been handled there. If `on_event` raises (Optuna pruning,
say), the target is stopped at that point and the same exception is raised in the caller.

A trial's process does not outlive its caller: when the caller dies (SIGKILL, a crash), a
thread in the trial's process sees the caller's end of a pipe close and ends it at once, quietly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from sweep.signals import StopToken

PRELOAD = ["sweep.preload"]
EXIT_CALLER_GONE = 75
STOP_POLL_SECONDS = 0.1


class TrialProcessError(RuntimeError):
    """The trial's process raised or died; `child_traceback` holds its traceback, if any."""

    def __init__(self, message: str, child_traceback: str | None = None) -> None:
        super().__init__(message)
        self.child_traceback = child_traceback


class _Stopped(BaseException):
    """Raised inside the target when the caller's on_event raised."""


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_server() -> None:
    """Start the server now (idempotent), so its Keras import overlaps the caller's set-up
    instead of delaying the first trial."""
    _context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def call_in_process(
    target: Callable[..., Any],
    *args: Any,
    on_event: Callable[[Any], None] | None = None,
    rebuild: dict[str, type[Exception]] | None = None,
    prepare: Callable[[], None] | None = None,
    stop: StopToken | None = None,
) -> tuple[Any, float]:
    """`target(report, *args)` in a fresh process: returns its result and the process's peak
    resident set in MiB. `target`, `args` and `prepare` must pickle (module-level functions, or
    partials of them); `prepare()` runs in the new process first (thread and device limits).

    An exception in the target is raised here as the `rebuild` class named like it (its
    message kept), else as TrialProcessError("Type: message") with the child's traceback.
    When `stop` is stopped (another thread caught Ctrl-C), the process is ended and the stop's
    interruption raised here, as Ctrl-C itself would in the main thread."""
    context = _context()
    ours, theirs = context.Pipe()
    lifeline, alive = context.Pipe(duplex=False)
    process = context.Process(
        target=_child, args=(theirs, lifeline, target, args, prepare), daemon=True
    )
    process.start()
    theirs.close()
    lifeline.close()
    finished = False
    try:
        while True:
            try:
                while stop is not None:
                    stop.check()
                    if ours.poll(STOP_POLL_SECONDS):
                        break
                message = ours.recv()
            except EOFError:
                process.join(timeout=10)
                raise TrialProcessError(_death(process.exitcode)) from None
            kind = message[0]
            if kind == "event":
                try:
                    if on_event is not None:
                        on_event(message[1])
                except BaseException:
                    ours.send("stop")
                    _wait_stopped(ours)
                    raise
                ours.send(None)
            elif kind == "result":
                finished = True
                return message[1], message[2]
            else:  # "error"
                _, name, text, child_traceback = message
                if rebuild and name in rebuild:
                    error = rebuild[name](text)
                    error.child_traceback = child_traceback  # type: ignore[attr-defined]
                    raise error
                raise TrialProcessError(f"{name}: {text}", child_traceback)
    finally:
        ours.close()
        if finished:
            process.join(timeout=10)
        if process.is_alive():  # Ctrl-C or an error here: the trial's process has nothing to keep
            process.kill()
        process.join()
        alive.close()


def _wait_stopped(connection) -> None:
    """Drain the child's last message after a stop request (it ends with "stopped")."""
    try:
        while connection.recv()[0] == "event":
            connection.send("stop")
    except EOFError:
        pass


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the trial's process was killed by {name}{hint}"
    return f"the trial's process ended without a result (exit code {exitcode})"


def _child(
    connection, lifeline, target: Callable[..., Any], args: tuple, prepare: Callable | None
) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the sweep process handles it (it
    # records the trial as interrupted and ends this process), so this one must not turn it
    # into a trial error first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The same for SIGTERM sent to the whole group (systemd, a batch scheduler, kill -TERM -PGID):
    # the sweep records every trial as terminated and kills this process itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(lifeline,), name="watch-caller", daemon=True).start()

    def send(message: tuple) -> None:
        try:
            connection.send(message)
        except (OSError, EOFError):
            _caller_gone()

    def report(event: Any) -> None:
        send(("event", event))
        try:
            reply = connection.recv()
        except (OSError, EOFError):
            _caller_gone()
        if reply is not None:
            raise _Stopped

    try:
        if prepare is not None:
            prepare()
        result = target(report, *args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        send(("result", result, peak))
    except _Stopped:
        send(("stopped",))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
        send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
    finally:
        connection.close()


def _watch(lifeline) -> None:
    """Block until the caller's end of `lifeline` closes (it never sends), then end."""
    with contextlib.suppress(OSError, EOFError):
        lifeline.recv_bytes()
    _caller_gone()


def _caller_gone() -> NoReturn:
    """The caller died: nobody reads a result or an error, so end now without a word."""
    os._exit(EXIT_CALLER_GONE)
