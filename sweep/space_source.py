"""Where a search space comes from, and reading its file with checks.

A space argument is a path, or a bare name: ./search_spaces/NAME.yaml in the current folder
(the user's own spaces), else the NAME.yaml shipped with the package (the `search_spaces`
package data), so every command takes `filters` as well as `search_spaces/filters.yaml`.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from models.config import short_text
from sweep.safe_yaml import MAX_YAML_CHARS, load_yaml, yaml_problem
from sweep.space import SpaceError

LOCAL_SPACES = Path("search_spaces")
SHIPPED = Path(__file__).resolve().parents[1] / "search_spaces"
SUFFIXES = (".yaml", ".yml")
_GIVE_YAML = "give a search-space YAML file"


def find_space(given: str | Path) -> Path:
    """The file a space argument names: an existing path as given; else, for a bare name (no
    folder, no .yaml), ./search_spaces/NAME.yaml, else the shipped NAME.yaml."""
    path = Path(given)
    text = str(given)
    if _exists(path) or not _is_bare_name(text):
        return path
    local = LOCAL_SPACES / f"{text}.yaml"
    if _exists(local):
        return local
    shipped = shipped_spaces()
    if text in shipped:
        return shipped[text]
    raise SpaceError(
        f"{short_text(text, 60)}: no such file, no {LOCAL_SPACES}/{short_text(text, 60)}.yaml "
        f"here and no shipped space of that name; give a YAML file or one of the shipped "
        f"spaces: {', '.join(shipped) or '(none installed)'}"
    )


def shipped_spaces() -> dict[str, Path]:
    """The search spaces installed with the package, by name, in name order: the
    search_spaces/ folder beside the sweep package, in a clone (editable install) as in
    site-packages (where setup.cfg's package data puts it)."""
    if not SHIPPED.is_dir():
        return {}
    return {f.stem: f for f in sorted(SHIPPED.glob("*.yaml"))}


def _is_bare_name(text: str) -> bool:
    return (
        text not in ("", ".", "..")
        and "/" not in text
        and len(Path(text).parts) == 1
        and not text.lower().endswith(SUFFIXES)
    )


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name the OS cannot look up (too long) does not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def read_space_yaml(path: Path) -> Any:
    """The parsed YAML of a space file; every error is a SpaceError naming the file."""
    try:
        return load_yaml(_read_text(path))
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: {yaml_problem(exc)}") from None


def _read_text(path: Path) -> str:
    """The text of a space file; a directory, a device, a huge or binary file is an error."""
    data = _read_bytes(path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise SpaceError(f"{path}: not a text file (NUL byte at offset {nul}); {_GIVE_YAML}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); {_GIVE_YAML}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SpaceError(f"{path}: is a directory; {_GIVE_YAML}")
        if not stat.S_ISREG(mode):
            raise SpaceError(f"{path}: not a regular file (a device or pipe); {_GIVE_YAML}")
        with path.open("rb") as file:
            data = file.read(MAX_YAML_CHARS + 1)
    except FileNotFoundError:
        raise SpaceError(
            f"{path}: file not found; the shipped spaces are in search_spaces/"
        ) from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read it ({exc.strerror or exc}); {_GIVE_YAML}") from None
    if len(data) > MAX_YAML_CHARS:
        raise SpaceError(
            f"{path}: larger than {MAX_YAML_CHARS // 1024} KiB, too large for a search-space "
            "file (a few KB of YAML); check the path"
        )
    return data
