"""Stop signals: SIGTERM (kill, systemd, Kubernetes, batch schedulers) stops a sweep as Ctrl-C
does, so the running trial is recorded as stopped in both stores and its process is ended.

SIGTERM raises `Terminated`, a KeyboardInterrupt, so every clean-up path written for Ctrl-C
runs for it too. A second SIGINT or SIGTERM is noted and ignored, since cutting the clean-up
short would leave the trial running in the stores; a third ends the process at once (the
clean-up can take minutes when a tracking server is down and MLflow retries).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
_ignored: list[int] = []  # the signal this process ignored while cleaning up, if any


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def stop_reason(exc: BaseException) -> str:
    """How the stores record a trial stopped by `exc`."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"


def exit_code(exc: KeyboardInterrupt) -> int:
    """The exit code of a command stopped by `exc`: 130 for Ctrl-C, 143 for SIGTERM, as a
    shell reports a process ended by the signal itself."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def stop_on_signals() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, once. Also undoes the
    SIG_IGN a shell gives SIGINT in background commands (`make workers`, `cmd &`)."""
    _ignored.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


def _stop(signum: int, frame: FrameType | None) -> None:
    for other in STOP_SIGNALS:
        signal.signal(other, _already_stopping)
    exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    for token, _ in _watched:  # other threads' trials stop now, not after this thread's clean-up
        token.interrupt(exc)
    if not any(deferred for _, deferred in _watched):
        raise exc


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    # os.write, not print: the main thread may be inside a print to the same stream.
    name = signal.Signals(signum).name
    if _ignored:
        os.write(2, f"{name} again: stopping now, without the clean-up\n".encode())
        os._exit(128 + signum)
    _ignored.append(signum)
    os.write(2, f"{name}: already stopping, cleaning up (once more to stop at once)\n".encode())


class StopToken:
    """How the main thread stops the trials other threads are running (several trials at
    once): `stop(exc)` with the KeyboardInterrupt it caught; each thread's `check()` then raises
    the same kind of interruption there, so its trial is recorded as Ctrl-C's or SIGTERM's.
    While `watching(token)`, the stop signals themselves interrupt it, at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: KeyboardInterrupt | None = None

    def interrupt(self, reason: KeyboardInterrupt) -> None:
        """Mark the token stopped; safe in a signal handler (plain attributes, no lock taken:
        threads see it at their next check(), sleepers within their wait's timeout)."""
        self._reason = reason

    def stop(self, reason: KeyboardInterrupt) -> None:
        if self._reason is None:
            self._reason = reason
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._reason is not None

    def check(self) -> None:
        """Raise the stop's interruption in this thread, if the run was stopped."""
        if self._reason is not None:
            raise type(self._reason)()

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds` (in short steps), raising as soon as the run is stopped."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check()
            self._event.wait(min(left, 0.25))
        self.check()


_watched: list[tuple[StopToken, bool]] = []


@contextmanager
def watching(token: StopToken, deferred: bool = False) -> Iterator[None]:
    """While the body runs, SIGINT and SIGTERM (as stop_on_signals handles them) stop `token`
    the moment they arrive. `deferred`: they raise nothing where they land either, so the main
    thread too stops at its next `token.check()`, never inside a store's call (where an
    interruption can leave a database session half done); for threads that all check it."""
    entry = (token, deferred)
    _watched.append(entry)
    try:
        yield
    finally:
        _watched.remove(entry)
