"""Datasets: where the IDX files (or Keras' copy) come from, the seeded train/validation
split, and the augmentation of training batches. The file format itself is sweep.idx."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sweep.errors import SweepError
from sweep.idx import (
    IMAGES_MAGIC,
    IdxError,
    idx_shape,
    read_images,
    read_labels,
    shape_text,
    short_reason,
)

if TYPE_CHECKING:
    from sweep.profiles import Profile

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("fashion-mnist", "mnist")
_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_MIN_TRAINING_IMAGES = 2
_TRAINING_NEEDS = "training needs at least 2 (one to train, one to validate)"

Arrays = tuple[np.ndarray, np.ndarray]


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

    def training(self) -> Arrays:
        """Images (n, rows, cols) and labels of the training file: at least one image to
        train on and one to validate on, checked here, where the file's name is known."""
        images, labels = self._arrays(test=False)
        _need_images(images, self._name("train_images"), _MIN_TRAINING_IMAGES, _TRAINING_NEEDS)
        return images, labels

    def test(self) -> Arrays:
        """Images and labels of the test file: for a final evaluation only. Its images must
        have the training images' size, which the training file's header gives."""
        images, labels = self._arrays(test=True)
        if self.files is not None:
            trained = idx_shape(self.files.train_images, IMAGES_MAGIC)[1:]
            if images.shape[1:] != trained:
                raise IdxError(
                    f"{self.files.test_images}: images are {shape_text(images.shape[1:])} but "
                    f"the training images ({self.files.train_images}) are "
                    f"{shape_text(trained)}; pair the test file with its own training file"
                )
        _need_images(images, self._name("test_images"), 1, "the final evaluation needs at least 1")
        return images, labels

    def _arrays(self, test: bool) -> Arrays:
        """Images and labels of the training (or, with `test`, the test) file, as read."""
        if self.files is None:
            return self._keras_arrays()[int(test)]
        if test:
            images_path, labels_path = self.files.test_images, self.files.test_labels
        else:
            images_path, labels_path = self.files.train_images, self.files.train_labels
        images = read_images(images_path)
        return images, read_labels(labels_path, len(images), images_path)

    def _name(self, key: str) -> str:
        return str(getattr(self.files, key)) if self.files is not None else self.location

    def _keras_arrays(self) -> tuple[Arrays, Arrays]:
        """Keras' (train, test) arrays: from its cached .npz file, else its downloader."""
        if not self.location.endswith(".npz"):
            return _download(self.name)
        try:
            with np.load(self.location) as data:
                return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise SweepError(
                f"{self.location}: cannot read Keras' cached dataset ({short_reason(exc)}); "
                "delete it so that Keras downloads it again"
            ) from None


def _need_images(images: np.ndarray, name: str, minimum: int, needs: str) -> None:
    """Fail in one line, naming the file, when it has fewer than `minimum` images."""
    if len(images) < minimum:
        plural = "image" if len(images) == 1 else "images"
        raise IdxError(f"{name}: has {len(images)} {plural}; {needs}")


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


def _download(name: str) -> tuple[Arrays, Arrays]:
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


def load_training(source: DataSource, profile: Profile, seed: int) -> tuple[Split, int]:
    """The profile's seeded train/validation split of the training file and the number of
    classes its labels define."""
    images, labels = source.training()
    split = subset_and_split(
        images, labels, subset=profile.subset, val_fraction=profile.val_fraction, seed=seed
    )
    return split, int(labels.max()) + 1


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
