from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from sweep import data
from sweep.cli import main
from sweep.data import IdxFiles, find_source, subset_and_split
from sweep.errors import SweepError
from sweep.idx import IdxError, read_idx, read_images, read_labels, write_idx
from tests.conftest import idx_options, make_images, write_dataset


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip_raw_and_gzip(tmp_path: Path, name: str) -> None:
    images, _ = make_images(17)
    path = write_idx(tmp_path / name, images)
    back = read_images(path)
    assert back.dtype == np.uint8
    assert back.shape == (17, 28, 28)
    np.testing.assert_array_equal(back, images)


def test_idx_header_is_big_endian_with_magic_2051(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert int.from_bytes(raw[:4], "big") == 2051
    assert [int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12)] == [3, 28, 28]


def test_labels_round_trip_with_magic_2049(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels)
    assert int.from_bytes(path.read_bytes()[:4], "big") == 2049
    np.testing.assert_array_equal(read_labels(path, 10, "images"), labels)


def test_truncated_file_names_file_and_sizes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "imgs", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxError, match=r"imgs: header says 4x28x28 .* truncated"):
        read_images(path)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "imgs.gz", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(IdxError, match="imgs.gz: cannot read"):
        read_images(path)


def test_labels_file_given_as_images_is_wrong_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(IdxError, match="magic number 2049, expected 2051"):
        read_images(path)


def test_not_an_idx_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello world, not idx")
    with pytest.raises(IdxError, match="notes.txt: magic number"):
        read_idx(path)


def test_images_with_wrong_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "flat"
    header = bytes([0, 0, 8, 2]) + np.asarray([2, 784], ">u4").tobytes()
    path.write_bytes(header + bytes(2 * 784))
    with pytest.raises(IdxError, match="flat: magic number 2050, expected 2051"):
        read_images(path)


def test_label_count_must_match_images(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(7, np.uint8))
    with pytest.raises(IdxError, match="7 labels for 9 images"):
        read_labels(path, 9, "train-images")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdxError, match="file not found"):
        read_idx(tmp_path / "nope")


def test_bad_idx_file_on_the_cli_is_exit_2_one_line(
    tmp_path: Path, tiny_space: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_dataset(tmp_path / "d", 50, 10)
    Path(files.train_labels).write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])))
    code = main(["--output", str(tmp_path / "out"), "run", str(tiny_space), *idx_options(files)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "train-labels-idx1-ubyte.gz: 3 labels for 50 images" in err
    assert "Traceback" not in err


def test_split_is_seeded_disjoint_and_80_20() -> None:
    images, labels = make_images(500)
    images[:, 0, 0] = np.arange(500) % 256
    images[:, 0, 1] = np.arange(500) // 256
    a = subset_and_split(images, labels, seed=3)
    b = subset_and_split(images, labels, seed=3)
    c = subset_and_split(images, labels, seed=4)
    assert (len(a.x_train), len(a.x_val)) == (400, 100)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)

    def ids(x: np.ndarray) -> set[int]:
        return set(np.rint(x[:, 0, 0, 0] * 255 + x[:, 0, 1, 0] * 255 * 256).astype(int))

    assert not ids(a.x_train) & ids(a.x_val)
    assert len(ids(a.x_train) | ids(a.x_val)) == 500


def test_split_scales_pixels_and_adds_channel() -> None:
    images, labels = make_images(50)
    split = subset_and_split(images, labels, subset=40)
    assert split.x_train.dtype == np.float32
    assert split.x_train.shape == (32, 28, 28, 1)
    assert split.x_val.shape == (8, 28, 28, 1)
    assert split.x_train.min() >= 0.0 and split.x_train.max() <= 1.0
    assert split.x_train.max() == pytest.approx(230 / 255)


def test_take_trims_and_rejects_too_many() -> None:
    split = subset_and_split(*make_images(100))
    small = split.take(10, 5)
    assert (len(small.x_train), len(small.x_val)) == (10, 5)
    with pytest.raises(SweepError, match="train_size=500 but the split has only 80"):
        split.take(500, None)


def test_named_dataset_prefers_debian_package(tmp_path: Path, monkeypatch) -> None:
    debian = tmp_path / "debian"
    write_dataset(debian, 20, 5)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    source = find_source("fashion-mnist")
    assert source.location == str(debian)
    images, labels = source.training()
    assert images.shape == (20, 28, 28) and labels.shape == (20,)


def test_training_is_read_without_touching_the_test_file(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, 20, 5)
    Path(files.test_images).write_bytes(b"garbage")
    source = find_source(files=files)
    images, _ = source.training()
    assert len(images) == 20
    with pytest.raises(IdxError, match="t10k-images"):
        source.test()


def test_no_source_says_how_to_get_one(tmp_path: Path, monkeypatch) -> None:
    import keras

    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    source = find_source("fashion-mnist")
    with pytest.raises(SweepError, match="dataset-fashion-mnist.*--train-images"):
        source.training()


def test_unknown_dataset_name() -> None:
    with pytest.raises(SweepError, match="unknown dataset 'cifar'"):
        find_source("cifar")


def test_cli_needs_all_four_idx_options(tmp_path: Path, tiny_space: Path, capsys) -> None:
    code = main(["--output", str(tmp_path), "run", str(tiny_space), "--train-images", "x"])
    assert code == 2
    assert "missing --train-labels, --test-images, --test-labels" in capsys.readouterr().err


def test_idx_files_are_a_plain_record(tmp_path: Path) -> None:
    files = write_dataset(tmp_path, 5, 5, gz=False)
    assert isinstance(files, IdxFiles)
    assert read_images(files.train_images).shape == (5, 28, 28)
