"""Where a store the report reads lives, and whether it exists yet: a report reads a missing
store as empty and never creates it (opening a SQLite file or an MLflow folder would)."""

from __future__ import annotations

from pathlib import Path


def store_missing(url: str) -> bool:
    """True when `url` names a local store (SQLite file, MLflow folder) that does not exist:
    opening it would create it, and there is nothing in it to read."""
    path = _local_path(url)
    return path is not None and not path.exists()


def _local_path(url: str) -> Path | None:
    """The file or folder of a local store (SQLite, MLflow file store); None for a server or a
    URL that names no file."""
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        try:
            database = make_url(url).database
        except Exception:  # noqa: BLE001 - a malformed URL; opening it reports it
            return None
        plain = database and database != ":memory:" and not database.startswith("file:")
        return Path(database) if plain else None
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    local = is_local_uri(url, is_tracking_or_registry_uri=True)
    return Path(local_file_uri_to_path(url)) if local else None
