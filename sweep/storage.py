"""Optuna storage: URLs, masking their passwords, opening the storage, and the study lock."""

from __future__ import annotations

import fcntl
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import optuna

from sweep.errors import SweepError

# A trial whose worker sent no heartbeat for GRACE_FACTOR heartbeats is failed and retried
# (generous: compiling a model can hold Python's GIL, and so the heartbeat, for seconds).
GRACE_FACTOR = 4


def default_storage(output: Path) -> str:
    return f"sqlite:///{(output / 'optuna.db').resolve()}"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a database URL: show it as given
        return url


def database_url(url: str) -> str:
    """SQLAlchemy URL with a driver that is installed: plain postgresql:// means psycopg 3."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL; RDBStorage reports it
        return url
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_storage(
    url: str, heartbeat: int | None = None, on_stale: Callable | None = None
) -> optuna.storages.RDBStorage:
    """Connect to an Optuna RDB storage, failing fast with a one-line error. With `heartbeat`
    (seconds), running trials send heartbeats and `on_stale(study, trial)` handles a trial
    whose worker stopped sending them (GRACE_FACTOR heartbeats)."""
    engine_kwargs = {}
    if url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    database_url(url),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=heartbeat * GRACE_FACTOR if heartbeat else None,
                    heartbeat_stale_trial_callback=on_stale,
                )
        except Exception as exc:  # noqa: BLE001 - driver errors vary; all mean "cannot use it"
            # Workers starting together on an empty database race to create Optuna's tables;
            # the losers see the winner's tables on the next try.
            racing = "already exists" in str(exc) or "UniqueViolation" in str(exc)
            if racing and attempt < 4:
                time.sleep(1 + attempt)
                continue
            raise SweepError(
                f"cannot open Optuna storage {mask_url(url)}: {_first_line(exc)}; "
                "check the --storage URL (and $PGPASSWORD)"
            ) from None
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StudyLock:
    """Serialises the few steps that must not interleave between workers (choosing the next
    trial, creating the parent run): a PostgreSQL advisory lock, or a file lock beside a
    SQLite file. Held for milliseconds; a killed worker's lock goes with its connection."""

    def __init__(self, url: str, study_name: str) -> None:
        from sqlalchemy.engine import make_url

        self.key = int.from_bytes(
            hashlib.sha256(f"sweep:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        self.engine = self.path = None
        parsed = make_url(database_url(url))
        if parsed.get_backend_name() == "postgresql":
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self.engine = sqlalchemy.create_engine(
                parsed, poolclass=NullPool, connect_args={"connect_timeout": 10}
            )
        elif parsed.get_backend_name() == "sqlite" and parsed.database not in ("", ":memory:"):
            self.path = Path(parsed.database + ".lock")

    def __call__(self) -> AbstractContextManager[None]:
        if self.engine is not None:
            return self._advisory()
        if self.path is not None:
            return self._file()
        return nullcontext()

    @contextmanager
    def _advisory(self) -> Iterator[None]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                conn.commit()

    @contextmanager
    def _file(self) -> Iterator[None]:
        with open(self.path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
