"""IDX files, the datasets built on them, and the seeded train/validation split."""

from __future__ import annotations

import gzip
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion-mnist", "mnist")
_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


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
        reason = "it ends early" if isinstance(exc, EOFError) else _short(exc)
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
            f"{path}: header claims {_shape_text(dims)} ({_count_text(size)} bytes), more than "
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
    expected = math.prod(dims) + 4 + 4 * len(dims)
    return IdxError(
        f"{path}: header says {_shape_text(dims)} ({expected} bytes) but the file {found}; "
        "it is truncated or corrupt"
    )


def _magic_kind(magic: int) -> str:
    if magic in _KINDS:
        return f"IDX {_KINDS[magic]}"
    if magic >> 8 == 0x08:
        return f"an IDX file of {magic & 0xFF} dimensions"
    return "not an IDX file of unsigned bytes"


def _shape_text(dims: tuple[int, ...]) -> str:
    """Dimensions as text (an image size as rows x cols, e.g. 28x14), cut short for a header
    that declares very many."""
    text = "x".join(map(str, dims[:4]))
    return text if len(dims) <= 4 else f"{text}x... ({len(dims)} dimensions)"


def _count_text(n: int) -> str:
    digits = str(n)
    return digits if len(digits) <= 20 else f"about 10^{len(digits) - 1}"


def _short(exc: BaseException) -> str:
    """A short one-line reason from an exception, never a long repr of a user's data."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 60 else text[:57] + "..."


_OS_REASONS = {
    FileNotFoundError: "file not found; check the path",
    IsADirectoryError: "is a directory, not an IDX file; name the file inside it",
    PermissionError: "permission denied; make the file readable",
}


def _os_reason(exc: OSError) -> str:
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
    labels = read_idx(path, LABELS_MAGIC)
    if labels.ndim != 1:
        raise IdxError(f"{path}: labels must have 1 dimension, got {labels.ndim}")
    if len(labels) != count:
        raise IdxError(
            f"{path}: {len(labels)} labels for {count} images in {images_path}; "
            "pair each images file with its own labels file"
        )
    return labels


@dataclass(frozen=True)
class IdxFiles:
    """The four IDX files of a dataset."""

    train_images: Path
    train_labels: Path
    test_images: Path
    test_labels: Path


@dataclass(frozen=True)
class Split:
    """Float32 images in [0, 1] with a channel axis, and their labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def image_size(self) -> tuple[int, int]:
        """(rows, cols) of every image: the sizes a model's poolings must divide."""
        rows, cols = self.x_train.shape[1:3]
        return int(rows), int(cols)

    def take(self, train_size: int | None, val_size: int | None) -> Split:
        """The first `train_size` / `val_size` images of each split (None: all of them)."""
        for key, wanted, available in (
            ("train_size", train_size, len(self.x_train)),
            ("val_size", val_size, len(self.x_val)),
        ):
            if wanted is not None and wanted > available:
                raise SweepError(
                    f"{key}={wanted} but the split has only {available} images; "
                    f"use {key} <= {available}, or --profile full for all the data"
                )
        if train_size is None and val_size is None:
            return self
        return Split(
            self.x_train[:train_size],
            self.y_train[:train_size],
            self.x_val[:val_size],
            self.y_val[:val_size],
        )


@dataclass(frozen=True)
class DataSource:
    """Where a dataset comes from. The training and test files are read separately, so a
    sweep of the autoencoder never reads the test file."""

    name: str
    location: str
    files: IdxFiles | None = None

    def training(self) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, rows, cols) and labels of the training file: at least one image to
        train on and one to validate on, checked here, where the file's name is known."""
        if self.files is None:
            images, labels = self._keras_arrays()[0]
        else:
            images, labels = _read_pair(self.files.train_images, self.files.train_labels)
        _need_images(images, self._name("train_images"), _MIN_TRAINING_IMAGES, _TRAINING_NEEDS)
        return images, labels

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the test file: for a final evaluation only. Its images must
        have the training images' size, which the training file's header gives."""
        if self.files is None:
            images, labels = self._keras_arrays()[1]
        else:
            images, labels = _read_pair(self.files.test_images, self.files.test_labels)
            trained = idx_shape(self.files.train_images, IMAGES_MAGIC)[1:]
            if images.shape[1:] != trained:
                raise IdxError(
                    f"{self.files.test_images}: images are {_shape_text(images.shape[1:])} but "
                    f"the training images ({self.files.train_images}) are "
                    f"{_shape_text(trained)}; pair the test file with its own training file"
                )
        _need_images(images, self._name("test_images"), 1, "the final evaluation needs at least 1")
        return images, labels

    def _name(self, key: str) -> str:
        return str(getattr(self.files, key)) if self.files is not None else self.location

    def _keras_arrays(self):
        if not self.location.endswith(".npz"):
            return _download(self.name)
        try:
            with np.load(self.location) as data:
                return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise SweepError(
                f"{self.location}: cannot read Keras' cached dataset ({_short(exc)}); delete "
                "it so that Keras downloads it again"
            ) from None


_MIN_TRAINING_IMAGES = 2
_TRAINING_NEEDS = "training needs at least 2 (one to train, one to validate)"


def _need_images(images: np.ndarray, name: str, minimum: int, needs: str) -> None:
    """Fail in one line, naming the file, when it has fewer than `minimum` images."""
    if len(images) < minimum:
        plural = "image" if len(images) == 1 else "images"
        raise IdxError(f"{name}: has {len(images)} {plural}; {needs}")


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_images(images_path)
    return images, read_labels(labels_path, len(images), images_path)


def idx_files_in(folder: Path) -> IdxFiles | None:
    """The standard four IDX files in `folder` (raw or .gz), or None if any is missing."""
    found = {}
    for key, stem in _IDX_NAMES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return IdxFiles(**found)


def find_source(name: str = "fashion-mnist", files: IdxFiles | None = None) -> DataSource:
    """The user's own IDX files when given, else the first local copy of a named dataset:
    Debian's package, then Keras' cache; else Keras' downloader (needs the internet)."""
    if files is not None:
        return DataSource("idx", str(Path(files.train_images).parent), files)
    if name not in DATASETS:
        raise SweepError(
            f"unknown dataset {name!r}; use one of {', '.join(DATASETS)} or name IDX files "
            "with --train-images --train-labels --test-images --test-labels"
        )
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    folders = [DEBIAN_FASHION_MNIST, cache / "fashion-mnist"] if name == "fashion-mnist" else []
    folders.append(cache / name)
    for folder in folders:
        found = idx_files_in(folder)
        if found is not None:
            return DataSource(name, str(folder), found)
    if name == "mnist" and (cache / "mnist.npz").is_file():
        return DataSource(name, str(cache / "mnist.npz"))
    return DataSource(name, "keras download")


def _download(name: str):
    """Fetch through Keras' loader; fail with instructions when offline."""
    hint = (
        "install Debian's dataset-fashion-mnist package (make setup does), "
        if name == "fashion-mnist"
        else ""
    )
    try:
        import keras

        loader = keras.datasets.fashion_mnist if name == "fashion-mnist" else keras.datasets.mnist
        return loader.load_data()
    except Exception as exc:  # noqa: BLE001 - any network or cache failure means "no source"
        raise SweepError(
            f"no local copy of {name} and the download failed ({type(exc).__name__}); "
            f"{hint}connect to the internet once, or pass your own IDX files with "
            "--train-images --train-labels --test-images --test-labels"
        ) from None


def subset_and_split(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    subset: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Seeded shuffle of the training file, an optional subset, then a train/validation split.

    The test file is never involved: it is kept for the classifier's final evaluation.
    """
    order = np.random.default_rng(seed).permutation(len(images))[:subset]
    _need_images(order, "the training data", _MIN_TRAINING_IMAGES, _TRAINING_NEEDS)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(
        x_train=to_float_images(images[train_idx]),
        y_train=labels[train_idx],
        x_val=to_float_images(images[val_idx]),
        y_val=labels[val_idx],
    )


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def class_names(dataset: str, n_classes: int) -> list[str]:
    """Readable class names where the dataset has them, else the label numbers."""
    if dataset == "fashion-mnist" and n_classes == len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(n_classes)]


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (n, rows, cols) -> float32 (n, rows, cols, 1) scaled to [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def shift_and_flip(
    images: np.ndarray, rng: np.random.Generator, max_shift: int, flip: bool
) -> np.ndarray:
    """A copy of a batch (n, height, width[, channels]) with each image moved by a random
    whole number of pixels in -max_shift..max_shift along both axes (zero fill) and, with
    `flip`, mirrored left-right with probability 1/2."""
    n, height, width = images.shape[:3]
    pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad)
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=(2, n))
    rows = (max_shift - dy)[:, None, None] + np.arange(height)[None, :, None]
    cols = (max_shift - dx)[:, None, None] + np.arange(width)[None, None, :]
    if flip:
        mirrored = rng.random(n) < 0.5
        cols = np.where(mirrored[:, None, None], cols[:, :, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows, cols]
