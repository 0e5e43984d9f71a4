"""Hostile IDX files: each fails in one line naming the file, and none can exhaust memory."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep import data, idx
from sweep.cli import main
from sweep.data import find_source, subset_and_split
from sweep.idx import IdxError, read_idx, read_images, read_labels
from tests.conftest import ROOT, idx_options, make_images, write_dataset

FF = 0xFFFFFFFF


def header(dims: list[int]) -> bytes:
    """An IDX header of unsigned bytes with these dimensions (the magic follows from them)."""
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def image_bytes(n: int, rows: int = 28, cols: int = 28) -> bytes:
    return header([n, rows, cols]) + bytes(n * rows * cols)


HOSTILE_IMAGES = {
    "dims-past-int64": (header([FF, FF, FF]), "header claims 4294967295x4294967295x4294967295"),
    "terabytes-claimed": (header([FF, 28, 28]) + bytes(100), "the file is corrupt"),
    "zero-rows": (header([5, 0, 28]), "images of 0x28 pixels"),
    "zero-cols": (header([5, 28, 0]), "images of 28x0 pixels"),
    "trailing-data": (image_bytes(2, 28, 14) + b"xx", "header says 2x28x14 (800 bytes)"),
    "truncated": (image_bytes(2, 28, 14)[:-8], "2x28x14 (800 bytes) but the file"),
    "labels-magic": (header([5]) + bytes(5), "magic number 2049, expected 2051"),
    "two-dims": (header([2, 784]) + bytes(2 * 784), "IDX file of 2 dimensions"),
    "header-only-half": (header([2, 28, 28])[:9], "declares 3 dimensions but the file ends"),
    "empty": (b"", "too short for an IDX header"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("name", list(HOSTILE_IMAGES))
def test_hostile_images_file_is_one_line_naming_it(tmp_path: Path, name: str, gz: bool) -> None:
    content, fragment = HOSTILE_IMAGES[name]
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(IdxError) as caught:
        read_images(path)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and len(message) < 300


def test_four_dims_of_ff_multiply_in_python_ints(tmp_path: Path) -> None:
    path = tmp_path / "four"
    path.write_bytes(header([FF] * 4))
    with pytest.raises(IdxError, match=r"4294967295x4294967295x4294967295x4294967295 \(about 10"):
        read_idx(path)


def test_many_dimensions_are_cut_short_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "deep"
    path.write_bytes(header([FF] * 255))
    with pytest.raises(IdxError, match=r"x\.\.\. \(255 dimensions\)") as caught:
        read_idx(path)
    assert len(str(caught.value)) < 300


CORRUPT_GZIP = {
    "bad-deflate": lambda good: good[:10] + b"\xff" * 40,
    "truncated": lambda good: good[: len(good) // 2],
    "bad-crc": lambda good: good[:-8] + bytes(8),
}


@pytest.mark.parametrize("name", list(CORRUPT_GZIP))
def test_corrupt_gzip_is_one_line(tmp_path: Path, name: str) -> None:
    images, _ = make_images(20)
    good = gzip.compress(header([20, 28, 28]) + images.tobytes())
    path = tmp_path / f"{name}.gz"
    path.write_bytes(CORRUPT_GZIP[name](good))
    with pytest.raises(IdxError, match="not a valid gzip file .*re-download it") as caught:
        read_images(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_gzip_header_claiming_more_than_deflate_can_hold(tmp_path: Path) -> None:
    path = tmp_path / "small.gz"
    path.write_bytes(gzip.compress(header([60_000, 28, 28])))
    with pytest.raises(IdxError, match="is a gzip of .* bytes, which cannot hold that much"):
        read_images(path)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.mkdir(), "is a directory, not an IDX file"),
        (lambda p: None, "file not found"),
    ],
    ids=["directory", "missing"],
)
def test_unreadable_path_is_one_line(tmp_path: Path, make, fragment: str) -> None:
    path = tmp_path / "train-images"
    make(path)
    with pytest.raises(IdxError, match=f"train-images: {fragment}"):
        read_images(path)


def test_permission_denied_is_one_line(tmp_path: Path, monkeypatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    locked = tmp_path / "locked"
    locked.write_bytes(bytes(16))
    monkeypatch.setattr(idx, "open", denied, raising=False)
    with pytest.raises(IdxError, match="locked: permission denied; make the file readable"):
        read_images(locked)


@pytest.mark.parametrize(
    ("gz", "fragment"),
    [(False, "has 18 bytes"), (True, "is a gzip of 31 bytes, which cannot hold")],
    ids=["raw", "gzip"],
)
def test_huge_label_count_fails_before_reading(tmp_path: Path, gz: bool, fragment: str) -> None:
    content = header([FF // 2]) + bytes(10)
    path = tmp_path / ("labels.gz" if gz else "labels")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(
        IdxError, match=rf"header says 2147483647 \(2147483655 bytes\) .*{fragment}"
    ):
        read_labels(path, 10, "images")


def test_images_file_given_as_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(image_bytes(3))
    with pytest.raises(IdxError, match="expected 2049 for IDX labels .* this is IDX images"):
        read_labels(path, 3, "images")


def test_non_square_images_read_and_report_rows_x_cols(tmp_path: Path) -> None:
    path = tmp_path / "wide.gz"
    path.write_bytes(gzip.compress(image_bytes(6, 28, 14)))
    images = read_images(path)
    assert images.shape == (6, 28, 14)
    split = subset_and_split(images, np.zeros(6, np.uint8))
    assert split.image_size == (28, 14)
    path.write_bytes(gzip.compress(image_bytes(6, 28, 14)[:-1]))
    with pytest.raises(IdxError, match="header says 6x28x14"):
        read_images(path)


def small_dataset(tmp_path: Path, n_train: int) -> data.IdxFiles:
    files = write_dataset(tmp_path / "d", 2, 5)
    images, labels = make_images(n_train)
    idx.write_idx(files.train_images, images)
    idx.write_idx(files.train_labels, labels)
    return files


@pytest.mark.parametrize(
    ("n", "fragment"), [(0, "has 0 images; training needs at least 2"), (1, "has 1 image;")]
)
def test_too_few_training_images_named_before_split(tmp_path: Path, n: int, fragment: str) -> None:
    files = small_dataset(tmp_path, n)
    with pytest.raises(IdxError, match=fragment) as caught:
        find_source(files=files).training()
    assert str(caught.value).startswith(str(files.train_images))


def test_empty_test_file_is_named(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, 5, 0)
    with pytest.raises(IdxError, match="t10k-images-idx3-ubyte.gz: has 0 images; the final"):
        find_source(files=files).test()


def test_test_images_of_another_size_say_rows_x_cols(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, 5, 3)
    Path(files.test_images).write_bytes(gzip.compress(image_bytes(3, 28, 14)))
    with pytest.raises(IdxError, match="images are 28x14 but the training images .* are 28x28"):
        find_source(files=files).test()


def test_two_images_split_one_and_one() -> None:
    split = subset_and_split(*make_images(2), val_fraction=0.9)
    assert (len(split.x_train), len(split.x_val)) == (1, 1)


BOMB_CHECK = """
import resource, sys
from sweep.idx import IdxError, read_images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_images(sys.argv[1])
except IdxError as exc:
    print("ERROR", exc)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def write_bomb(path: Path, claimed: int, inflated_mb: int) -> None:
    """A gzip whose header claims `claimed` 28x28 images, followed by `inflated_mb` MB of
    zeros, streamed in 1 MB chunks so the test itself never holds it."""
    zeros = bytes(1 << 20)
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as out:
        out.write(header([claimed, 28, 28]))
        for _ in range(inflated_mb):
            out.write(zeros)


def test_gzip_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    write_bomb(path, claimed=10, inflated_mb=200)
    assert path.stat().st_size < 2 << 20
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHECK, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert "header says 10x28x28 (7856 bytes) but the file inflates to more than" in lines["ERROR"]
    assert int(lines["GROWTH_KB"]) < 100 * 1024


def test_one_image_on_the_cli_is_exit_2_before_training(
    tmp_path: Path, tiny_space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_dataset(tmp_path, 1)
    code = main(["--output", str(tmp_path / "out"), "run", str(tiny_space), *idx_options(files)])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err == (
        f"error: {files.train_images}: has 1 image; "
        "training needs at least 2 (one to train, one to validate)"
    )
    assert "epoch" not in captured.out.lower()


def test_a_fifo_or_device_is_refused_without_opening_it(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(IdxError, match="not a regular file"):
            read_idx(path)
