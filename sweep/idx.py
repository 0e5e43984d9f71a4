"""The IDX file format: a streaming reader that checks every header against the bytes that
really arrive, a writer, and the images/labels readers built on them."""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from sweep.errors import SweepError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
GZIP_MAGIC = b"\x1f\x8b"
_KINDS = {IMAGES_MAGIC: "images (count, rows, cols)", LABELS_MAGIC: "labels (count)"}
# Deflate turns one compressed byte into at most 1032 bytes: a bound on what a gzip file holds.
_DEFLATE_MAX_RATIO = 1032
# Far above any IDX dataset a sweep trains on in memory (Fashion-MNIST is 47 MB).
MAX_IDX_BYTES = 4 << 30
_CHUNK = 1 << 20


class IdxError(SweepError):
    """An IDX file is missing, truncated or not what its header says."""


class _Idx(NamedTuple):
    """An open IDX file positioned after its header, and what the header declares."""

    stream: BinaryIO
    dims: tuple[int, ...]
    header_bytes: int
    payload_bytes: int
    is_gzip: bool
    disk_bytes: int | None


def read_idx(path: str | os.PathLike[str], expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzip) into an array shaped as its header says.

    The payload is streamed and stops one byte past the size the header declares, so memory
    grows with the bytes that really arrive, never with what a hostile header claims."""
    path = Path(path)
    with _open_idx(path, expect_magic) as idx:
        _check_capacity(path, idx)
        payload = _read_payload(idx.stream, idx.payload_bytes)
    expected, found = idx.header_bytes + idx.payload_bytes, idx.header_bytes + len(payload)
    if found != expected:
        more = "more than " if found > expected else ""
        verb = "inflates to" if idx.is_gzip else "has"
        raise _size_error(path, idx.dims, f"{verb} {more}{min(found, expected)} bytes")
    return np.frombuffer(payload, dtype=np.uint8).reshape(idx.dims)


def idx_shape(path: str | os.PathLike[str], expect_magic: int | None = None) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares, without reading its payload."""
    with _open_idx(Path(path), expect_magic) as idx:
        return idx.dims


@contextmanager
def _open_idx(path: Path, expect_magic: int | None) -> Iterator[_Idx]:
    """Open an IDX file (raw or gzip) and read its header; every failure to read the file,
    here or in the caller's body, becomes one IdxError naming it."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # opening a FIFO would block
            raise IdxError(f"{path}: not a regular file (a pipe or device); name an IDX file")
        with open(path, "rb") as file:
            is_gzip = file.read(2) == GZIP_MAGIC
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file) if is_gzip else file
            dims, header_bytes = _read_header(path, stream, expect_magic)
            on_disk = os.fstat(file.fileno())
            disk_bytes = on_disk.st_size if stat.S_ISREG(on_disk.st_mode) else None
            size = _payload_size(path, dims)
            yield _Idx(stream, dims, header_bytes, size, is_gzip, disk_bytes)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        reason = "it ends early" if isinstance(exc, EOFError) else short_reason(exc)
        raise IdxError(
            f"{path}: cannot read: not a valid gzip file ({reason}); re-download it, "
            "or decompress it and pass the raw file"
        ) from None
    except OSError as exc:
        raise IdxError(f"{path}: {_os_reason(exc)}") from None


def _read_header(
    path: Path, stream: BinaryIO, expect_magic: int | None
) -> tuple[tuple[int, ...], int]:
    """The dimensions an IDX header declares, and the header's length in bytes."""
    head = stream.read(4)
    if len(head) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head, "big")
    if expect_magic is not None and magic != expect_magic:
        raise IdxError(
            f"{path}: magic number {magic}, expected {expect_magic} for "
            f"{_magic_kind(expect_magic)} but this is {_magic_kind(magic)}; is it the right file?"
        )
    if head[:3] != b"\x00\x00\x08":
        raise IdxError(f"{path}: magic number {magic} is not an IDX file of unsigned bytes")
    ndim = head[3]
    if ndim == 0:
        raise IdxError(f"{path}: header declares 0 dimensions; the file is corrupt")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise IdxError(f"{path}: header declares {ndim} dimensions but the file ends early")
    dims = tuple(int.from_bytes(raw_dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    return dims, 4 + 4 * ndim


def _payload_size(path: Path, dims: tuple[int, ...]) -> int:
    """The byte count the dimensions multiply to, in Python ints so no header can overflow it."""
    size = math.prod(dims)
    if size > MAX_IDX_BYTES:
        raise IdxError(
            f"{path}: header claims {shape_text(dims)} ({_count_text(size)} bytes), more than "
            f"the {MAX_IDX_BYTES >> 30} GiB a sweep reads; the file is corrupt"
        )
    return size


def _check_capacity(path: Path, idx: _Idx) -> None:
    """Before reading: a raw file must be exactly header + payload long, and a gzip file
    cannot inflate to more than deflate's maximum ratio allows."""
    if idx.disk_bytes is None:
        return
    expected = idx.header_bytes + idx.payload_bytes
    if not idx.is_gzip and idx.disk_bytes != expected:
        raise _size_error(path, idx.dims, f"has {idx.disk_bytes} bytes")
    if idx.is_gzip and expected > idx.disk_bytes * _DEFLATE_MAX_RATIO:
        raise _size_error(
            path, idx.dims, f"is a gzip of {idx.disk_bytes} bytes, which cannot hold that much"
        )


def _read_payload(stream: BinaryIO, size: int) -> bytearray:
    """Up to `size` + 1 bytes of `stream`, read in chunks and grown as they arrive."""
    payload = bytearray()
    while len(payload) <= size:
        chunk = stream.read(min(_CHUNK, size + 1 - len(payload)))
        if not chunk:
            break
        payload += chunk
    return payload


def _size_error(path: Path, dims: tuple[int, ...], found: str) -> IdxError:
    """The error for a file whose length disagrees with its header: `found` says how."""
    expected = math.prod(dims) + 4 + 4 * len(dims)
    return IdxError(
        f"{path}: header says {shape_text(dims)} ({expected} bytes) but the file {found}; "
        "it is truncated or corrupt"
    )


def _magic_kind(magic: int) -> str:
    """What a magic number announces, in words for an error message."""
    if magic in _KINDS:
        return f"IDX {_KINDS[magic]}"
    if magic >> 8 == 0x08:
        return f"an IDX file of {magic & 0xFF} dimensions"
    return "not an IDX file of unsigned bytes"


def shape_text(dims: tuple[int, ...]) -> str:
    """Dimensions as text (an image size as rows x cols, e.g. 28x14), cut short for a header
    that declares very many."""
    text = "x".join(map(str, dims[:4]))
    return text if len(dims) <= 4 else f"{text}x... ({len(dims)} dimensions)"


def _count_text(n: int) -> str:
    """A byte count as digits, or its order of magnitude when a hostile header makes it huge."""
    digits = str(n)
    return digits if len(digits) <= 20 else f"about 10^{len(digits) - 1}"


def short_reason(exc: BaseException) -> str:
    """A short one-line reason from an exception, never a long repr of a user's data."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 60 else text[:57] + "..."


_OS_REASONS = {
    FileNotFoundError: "file not found; check the path",
    IsADirectoryError: "is a directory, not an IDX file; name the file inside it",
    PermissionError: "permission denied; make the file readable",
}


def _os_reason(exc: OSError) -> str:
    """Why the operating system refused the file, with the fix when the user can make it."""
    for kind, reason in _OS_REASONS.items():
        if isinstance(exc, kind):
            return reason
    return f"cannot read ({exc.strerror or type(exc).__name__})"


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path


def read_images(path: str | os.PathLike[str]) -> np.ndarray:
    """An images file as uint8 (count, rows, cols), each image at least one pixel."""
    images = read_idx(path, IMAGES_MAGIC)
    if images.ndim != 3:
        raise IdxError(
            f"{path}: images must have 3 dimensions (count, rows, cols), got {images.ndim}"
        )
    rows, cols = images.shape[1:]
    if rows == 0 or cols == 0:
        raise IdxError(
            f"{path}: header says images of {rows}x{cols} pixels; an image needs at least "
            "1 row and 1 column, so the file is corrupt"
        )
    return images


def read_labels(
    path: str | os.PathLike[str], count: int, images_path: str | os.PathLike[str]
) -> np.ndarray:
    """A labels file holding exactly one label for each of the `count` images of
    `images_path` (named in the error when it does not)."""
    labels = read_idx(path, LABELS_MAGIC)
    if labels.ndim != 1:
        raise IdxError(f"{path}: labels must have 1 dimension, got {labels.ndim}")
    if len(labels) != count:
        raise IdxError(
            f"{path}: {len(labels)} labels for {count} images in {images_path}; "
            "pair each images file with its own labels file"
        )
    return labels
