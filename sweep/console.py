"""What the `sweep` command writes: stdout and stderr with every password masked, and the
project's log messages as plain lines on stdout (`make workers` prefixes each line)."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from sweep.storage import add_secret, add_url_secret, redact

PROJECT_LOGGERS = ("sweep", "reports", "models")


class RedactingStream(io.TextIOBase):
    """A text stream that masks passwords (sweep.storage.redact) in everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def redacted_output(argv: list[str]) -> Iterator[None]:
    """Register every password the command may meet (URLs among its arguments or in the
    environment, $PGPASSWORD) and mask them in all it prints, argparse's errors, messages of
    libraries and tracebacks included."""
    add_secret(os.environ.get("PGPASSWORD"))
    given = [arg.partition("=")[2] if arg.startswith("-") else arg for arg in argv]
    urls = [os.environ.get("SWEEP_STORAGE"), os.environ.get("SWEEP_TRACKING_URI"), *given]
    for url in urls:
        if url and "://" in url:
            add_url_secret(url)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


class CurrentStdout(logging.Handler):
    """Writes each record, flushed, to `sys.stdout` as it is when the record comes: pytest's
    capsys and RedactingStream replace `sys.stdout` after the handler is installed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's rule: a failing handler never raises
            self.handleError(record)


_HANDLER = CurrentStdout(logging.INFO)
_HANDLER.setFormatter(logging.Formatter("%(message)s"))


def configure_logging() -> None:
    """Send the project's INFO messages to stdout as plain lines, exactly as print would write
    them, and nowhere else (no propagation to the root logger). Calling it again adds nothing."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
