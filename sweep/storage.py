"""The stores: Optuna storage URLs, redacting passwords, checking a store before it is written,
opening the storage, and the locks that serialise workers."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sweep.errors import SweepError

if TYPE_CHECKING:
    import optuna
    from sqlalchemy.engine import Engine

# A trial whose worker sent no heartbeat for GRACE_FACTOR heartbeats is failed and retried
# (generous: compiling a model can hold Python's GIL, and so the heartbeat, for seconds).
GRACE_FACTOR = 4
SQLITE_HEADER = b"SQLite format 3\x00"
# Shorter secrets are masked inside URLs only: masking every "abc" would garble the output.
MIN_SECRET = 4
# A password holding "/" reads as a path here; add_url_secret registers it as SQLAlchemy reads it.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s/'\"]+(?=@)")
_SECRETS: set[str] = set()
NO_FILE = (None, "", ":memory:")


@dataclass(frozen=True)
class Role:
    """What a store is for: its flag, its name in messages, the tables that identify it."""

    flag: str
    title: str
    markers: frozenset[str]
    filename: str
    unreachable: str


OPTUNA = Role(
    flag="--storage",
    title="Optuna storage",
    markers=frozenset({"studies", "trials", "version_info"}),
    filename="optuna.db",
    unreachable="cannot open Optuna storage",
)
MLFLOW = Role(
    flag="--tracking-uri",
    title="MLflow tracking store",
    markers=frozenset({"experiments", "runs"}),
    filename="mlflow.db",
    unreachable="cannot reach MLflow tracking at",
)


def default_url(output: Path, role: Role) -> str:
    """The store of `role` in the output folder: a SQLite file."""
    return f"sqlite:///{(output / role.filename).resolve()}"


def default_storage(output: Path) -> str:
    return default_url(output, OPTUNA)


def is_server(uri: str) -> bool:
    """Whether `uri` names a tracking server (http or https), not a database."""
    return uri.startswith(("http://", "https://"))


def add_secret(value: str | None) -> None:
    """Have `redact` mask `value` (and its URL-encoded form) wherever it appears."""
    if value and len(value) >= MIN_SECRET:
        _SECRETS.update({value, quote(value, safe="")})


def redact(text: str) -> str:
    """`text` with the password of every URL in it, and every added secret, replaced by ***."""
    text = _URL_PASSWORD.sub(r"\1***", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return redact(url)


def add_url_secret(url: str) -> None:
    """Register the password of `url` as a URL parser and SQLAlchemy read it (they differ on
    a password holding "/"), so that no message or log line shows it."""
    from urllib.parse import unquote, urlsplit

    from sqlalchemy.engine import make_url

    for read in (lambda: unquote(urlsplit(url).password or ""), lambda: make_url(url).password):
        try:
            add_secret(read())
        except Exception:  # noqa: BLE001, S112 - not a URL this parser reads
            continue


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


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def shown(value: str) -> str:
    """A short repr of a user's value, redacted, for a message."""
    value = redact(value)
    return repr(value if len(value) <= 60 else value[:57] + "...")


def sqlite_file(url: str, role: Role) -> Path | None:
    """The file of a SQLite URL (None for another database), after refusing a URL that names
    no usable database: not a URL, an unknown database, no file, a folder, a missing folder."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(database_url(url))
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - unparsable, or no such SQLAlchemy dialect
        raise SweepError(
            f"{role.flag} {shown(url)} is not a database URL; use sqlite:///PATH "
            "or postgresql://USER@HOST:PORT/DB"
        ) from None
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in NO_FILE:
        raise SweepError(
            f"{role.flag} {shown(url)} names no file (an in-memory store is lost at exit); "
            f"use sqlite:///PATH, e.g. sqlite:///runs/{role.filename}"
        )
    path = Path(parsed.database)
    if path.is_dir():
        raise SweepError(
            f"{role.flag} {mask_url(url)} is a folder; name a file in it, "
            f"e.g. sqlite:///{(path / role.filename).resolve()}"
        )
    _check_folder(path, url, role)
    return path


def _check_folder(path: Path, url: str, role: Role) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise SweepError(
            f"{role.flag} {mask_url(url)}: folder {folder} does not exist; create it "
            "(mkdir -p) or fix the path"
        )
    # SQLite writes a journal beside the file, and the workers' lock files go there too.
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SweepError(
            f"{role.flag} {mask_url(url)}: cannot write {path if path.exists() else folder}; "
            "choose a writable folder (or copy the store into one)"
        )


def _is_new_file(path: Path, url: str, role: Role) -> bool:
    """Whether the SQLite file is still to be created (missing or empty), after refusing a
    file that is not a SQLite database."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise SweepError(f"{role.flag} {mask_url(url)}: cannot read it ({exc.strerror})") from None
    if header != SQLITE_HEADER:
        raise SweepError(
            f"{role.flag} {mask_url(url)} is not a SQLite database file; name a new file "
            f"or an {role.title}"
        )
    return False


def quick_engine(url: str) -> Engine:
    """An engine without a pool (each connection closed when done) that gives up on an
    unreachable server within seconds."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    kwargs = _engine_kwargs(url).get("connect_args", {})
    return sqlalchemy.create_engine(database_url(url), poolclass=NullPool, connect_args=kwargs)


@contextmanager
def connect(url: str) -> Iterator:
    """A short-lived connection to the database of `url`, for a quick look."""
    engine = quick_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def store_tables(url: str) -> frozenset[str]:
    import sqlalchemy

    with connect(url) as conn:
        return frozenset(sqlalchemy.inspect(conn).get_table_names())


def store_owner(tables: frozenset[str]) -> Role | str | None:
    """Whose store holds `tables`: OPTUNA, MLFLOW, a description of a database with other
    tables, or None for a new (empty) store."""
    own = {t for t in tables if not t.startswith(("alembic_", "_alembic_tmp_", "sqlite_"))}
    if not own:
        return None
    found = [role for role in (OPTUNA, MLFLOW) if own & role.markers]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(sorted(own)[:4]) + (", ..." if len(own) > 4 else "")
    return f"a database with other tables ({listed})"


def _refuse_foreign(url: str, role: Role, tables: frozenset[str]) -> None:
    owner = store_owner(tables)
    if owner is None or owner == role:
        return
    if isinstance(owner, Role):
        what, hint = f"an {owner.title}", "swap --storage and --tracking-uri?"
    else:
        what, hint = owner, f"name a new file or an {role.title}"
    raise SweepError(f"{role.flag} {mask_url(url)} is {what}, not an {role.title}; {hint}")


def cannot_open(url: str, role: Role, exc: BaseException) -> SweepError:
    """The one-line error for a store that cannot be reached or read."""
    fix = f"check the {role.flag} URL" + (" (and $PGPASSWORD)" if url.startswith("postg") else "")
    return SweepError(f"{role.unreachable} {mask_url(url)}: {first_line(exc)}; {fix}")


@contextmanager
def store_errors(url: str, role: Role) -> Iterator[None]:
    """An error of the driver, the server or the tool raised inside (they vary; all mean the
    store cannot be used) becomes the one-line `cannot_open` error; a SweepError passes."""
    try:
        yield
    except SweepError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise cannot_open(url, role, exc) from None


@contextmanager
def first_open(url: str, role: Role, *, lock: bool = True) -> Iterator[frozenset[str]]:
    """Check the store of `url` and hold its init lock while the caller opens it (creating or
    migrating its schema): two first runs must not migrate one store at once. Yields its
    tables (empty for a new store), after refusing a store that belongs to another tool.
    Readers, which create and migrate nothing, pass `lock=False`."""
    add_url_secret(url)
    path = sqlite_file(url, role)
    with ExitStack() as stack:
        with store_errors(url, role):
            if lock:
                stack.enter_context(StoreLock(url, "sweep-init", ".init.lock")())
            new = path is not None and _is_new_file(path, url, role)
            tables = frozenset() if new else store_tables(url)
        _refuse_foreign(url, role, tables)
        yield tables


def open_storage(
    url: str,
    heartbeat: int | None = None,
    on_stale: Callable | None = None,
    *,
    read_only: bool = False,
) -> optuna.storages.RDBStorage:
    """Connect to an Optuna RDB storage, failing fast with a one-line error. With `heartbeat`
    (seconds), running trials send heartbeats and `on_stale(study, trial)` handles a trial
    whose worker stopped sending them (GRACE_FACTOR heartbeats). `read_only` (readers: the
    report): no table creation, no schema-version check and no init lock. Workers starting
    together on a new store create its tables one after the other, under the init lock."""
    import optuna

    opening = first_open(url, OPTUNA, lock=not read_only)
    with opening, store_errors(url, OPTUNA), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            database_url(url),
            engine_kwargs=_engine_kwargs(url),
            heartbeat_interval=heartbeat,
            grace_period=heartbeat * GRACE_FACTOR if heartbeat else None,
            heartbeat_stale_trial_callback=on_stale,
            skip_table_creation=read_only,
            skip_compatibility_check=read_only,
        )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, redacted and cut short, for a one-line error."""
    text = (getattr(exc, "message", None) or str(exc)).strip()
    return redact(text.splitlines()[0][:300]) if text else type(exc).__name__


class StoreLock:
    """A lock shared by every worker of one store: a PostgreSQL advisory lock, or a file lock
    beside a SQLite file (`suffix` added to its name); none for other databases. A killed
    worker's lock goes with its connection or process."""

    def __init__(self, url: str, name: str, suffix: str) -> None:
        from sqlalchemy.engine import make_url

        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.engine = self.path = None
        parsed = make_url(database_url(url))
        if parsed.get_backend_name() == "postgresql":
            self.engine = quick_engine(url)
        elif parsed.get_backend_name() == "sqlite" and parsed.database not in NO_FILE:
            self.path = Path(parsed.database + suffix)

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


class StudyLock(StoreLock):
    """Serialises the few steps that must not interleave between workers (choosing the next
    trial, creating the parent run). Held for milliseconds."""

    def __init__(self, url: str, study_name: str) -> None:
        super().__init__(url, f"sweep:{study_name}", ".lock")
