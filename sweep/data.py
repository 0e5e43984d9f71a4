"""IDX files, the datasets built on them, and the seeded train/validation split."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import SweepError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
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


def read_idx(path: str | os.PathLike[str], expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzip) into an array shaped as its header says."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise IdxError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        kind = "images" if expect_magic == IMAGES_MAGIC else "labels"
        raise IdxError(
            f"{path}: magic number {magic}, expected {expect_magic} for IDX {kind}; "
            "is it the right file?"
        )
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise IdxError(f"{path}: magic number {magic} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IdxError(f"{path}: header declares {ndim} dimensions but the file ends early")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise IdxError(
            f"{path}: header says {'x'.join(map(str, dims))} ({expected} bytes) but the file "
            f"has {len(raw)} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


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
        """Images (n, rows, cols) and labels of the training file."""
        if self.files is None:
            return self._keras_arrays()[0]
        return _read_pair(self.files.train_images, self.files.train_labels)

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the test file: for a final evaluation only."""
        if self.files is None:
            return self._keras_arrays()[1]
        return _read_pair(self.files.test_images, self.files.test_labels)

    def _keras_arrays(self):
        if self.location.endswith(".npz"):
            with np.load(self.location) as data:
                return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
        return _download(self.name)


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
    n_val = max(1, round(len(order) * val_fraction))
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
