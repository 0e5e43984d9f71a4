"""Shared fixtures: small generated IDX datasets and a shrunken run configuration."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sweep.data import IdxFiles  # noqa: E402
from sweep.idx import write_idx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


def make_images(n: int, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """`n` images of bright squares whose position depends on the label: learnable, not noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    rows = 2 + (labels // 5) * 12
    cols = 2 + (labels % 5) * 5
    for offset in range(8):
        images[np.arange(n)[:, None], (rows + offset)[:, None], cols[:, None] + np.arange(4)] = 230
    return images, labels


def write_dataset(folder: Path, n_train: int = 300, n_test: int = 60, gz: bool = True) -> IdxFiles:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    paths = {}
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = make_images(n, seed)
        paths[f"{'test' if split == 't10k' else 'train'}_images"] = write_idx(
            folder / f"{split}-images-idx3-ubyte{suffix}", images
        )
        paths[f"{'test' if split == 't10k' else 'train'}_labels"] = write_idx(
            folder / f"{split}-labels-idx1-ubyte{suffix}", labels
        )
    return IdxFiles(**paths)


@pytest.fixture(scope="session")
def idx_files(tmp_path_factory: pytest.TempPathFactory) -> IdxFiles:
    """A 300-image training file and a 60-image test file, gzipped."""
    return write_dataset(tmp_path_factory.mktemp("idx"))


def idx_options(files: IdxFiles) -> list[str]:
    """The CLI's dataset options naming the four IDX files."""
    return [
        "--train-images",
        str(files.train_images),
        "--train-labels",
        str(files.train_labels),
        "--test-images",
        str(files.test_images),
        "--test-labels",
        str(files.test_labels),
    ]


@pytest.fixture
def idx_args(idx_files: IdxFiles) -> list[str]:
    """The CLI's dataset options for `idx_files`."""
    return idx_options(idx_files)


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    """A 3-point grid over tiny filter counts: 2 epochs, batch 64, seconds per trial."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        """
study: tiny
base:
  filters: [4, 8]
  pool_blocks: 2
  kernel_size: 3
  batch_size: 64
  epochs: 2
params:
  filters:
    values: [[2, 4], [4, 8], [8, 8]]
"""
    )
    return path


@contextmanager
def lines_to(stream: TextIO) -> Iterator[None]:
    """The project's progress lines (logging, as the CLI prints them) written to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sweep")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def run(tmp_path: Path, idx_files: IdxFiles, monkeypatch: pytest.MonkeyPatch):
    """`run(space, fake, **kwargs)`: run_sweep on the generated images into stores in the
    test's folder, the objective replaced by `fake.factory`; `run.storage` is the Optuna URL."""
    import io

    import sweep.run
    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.storage import default_storage
    from sweep.tracking import Tracker

    out = tmp_path / "out"
    out.mkdir()
    tracker = Tracker(f"sqlite:///{out / 'mlflow.db'}", artifact_root=out / "art")
    source, storage = find_source(files=idx_files), default_storage(out)

    def go(space, fake, **kwargs):
        monkeypatch.setattr(sweep.run, "make_objective", fake.factory)
        with lines_to(io.StringIO()):
            return sweep.run.run_sweep(
                space, get_profile("quick"), source, storage, tracker, **kwargs
            )

    go.storage = storage
    return go
