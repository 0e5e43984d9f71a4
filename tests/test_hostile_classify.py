"""Hostile inputs to `sweep classify`: each is one `error:` line before the first epoch, with
no MLflow run recorded."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from sweep.cli import main
from sweep.data import IdxFiles
from sweep.idx import write_idx
from sweep.tf_env import import_keras_quietly
from tests.conftest import idx_options, make_images, write_dataset

keras = import_keras_quietly()

from models.autoencoder import build_autoencoder, extract_encoder  # noqa: E402
from models.classifier import build_classifier  # noqa: E402
from models.config import AutoencoderConfig, ClassifierConfig  # noqa: E402

TINY = AutoencoderConfig(filters=(2, 4))


def _not_an_autoencoder(path: Path) -> None:
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)


def _classifier(path: Path) -> None:
    encoder = extract_encoder(build_autoencoder(TINY))
    build_classifier(encoder, ClassifierConfig(units=4), n_classes=10).save(path)


def _zip_without_model(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


def _bad_config(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Nope", "config": {}}')
        archive.writestr("metadata.json", "{}")


ENCODERS = {
    "good": lambda path: build_autoencoder(TINY).save(path),
    "32x32": lambda path: build_autoencoder(TINY, input_shape=(32, 32, 1)).save(path),
    "text": lambda path: path.write_text("hello\n"),
    "empty": lambda path: path.write_bytes(b""),
    "zip": _zip_without_model,
    "unknown class": _bad_config,
    "dense": _not_an_autoencoder,
    "classifier": _classifier,
}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("encoders")
    paths = {}
    for name, make in ENCODERS.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.keras"
        make(paths[name])
    return paths


def _labels(files: IdxFiles, key: str, labels: np.ndarray) -> None:
    write_idx(getattr(files, key), labels.astype(np.uint8))


def _images(files: IdxFiles, key: str, n: int, size: int = 28) -> None:
    images, labels = make_images(n, size=size)
    write_idx(getattr(files, key), images)
    write_idx(getattr(files, key.replace("images", "labels")), labels)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-9])


# a change to the 60-train / 20-test image dataset -> a fragment of the error
DATA_CASES = {
    "test images not IDX": (lambda f: f.test_images.write_bytes(b"junk"), "t10k-images-idx3"),
    "test images truncated": (lambda f: _truncate(f.test_images), "t10k-images-idx3"),
    "test labels are images": (
        lambda f: f.test_labels.write_bytes(f.test_images.read_bytes()),
        "t10k-labels-idx1",
    ),
    "test image size": (
        lambda f: _images(f, "test_images", 20, size=32),
        "t10k-images-idx3-ubyte.gz: images are 32x32",
    ),
    "test label outside the classes": (
        lambda f: _labels(f, "test_labels", np.full(20, 10)),
        "test labels: label 10 is out of range 0..9",
    ),
    "test label count": (
        lambda f: _labels(f, "test_labels", np.zeros(19)),
        "19 labels for 20 images",
    ),
    "test file empty": (lambda f: _images(f, "test_images", 0), "t10k-images-idx3-ubyte.gz: has 0"),
    "single class": (
        lambda f: _labels(f, "train_labels", np.full(60, 3)),
        "all have label 3: a classifier needs at least 2 classes",
    ),
    "one training image": (
        lambda f: _images(f, "train_images", 1),
        "train-images-idx3-ubyte.gz: has 1 image",
    ),
    "no training image": (
        lambda f: _images(f, "train_images", 0),
        "train-images-idx3-ubyte.gz: has 0 images",
    ),
}

ENCODER_CASES = {
    "32x32": "takes images of (32, 32, 1) but the data has (28, 28, 1)",
    "text": "is not a Keras file",
    "empty": "is not a Keras file",
    "zip": "is not a Keras model this project can load (KeyError",
    "unknown class": "is not a Keras model this project can load (TypeError",
    "dense": "a Keras model without the encoder layers (enc_*)",
    "classifier": "a Keras model without the encoder layers (enc_*)",
}

CONFIG_CASES = {
    "train_size=1000": "train_size=1000 but the split has only 48 images",
    "val_size=13": "val_size=13 but the split has only 12 images",
    "train_size=1": "needs at least 2 classes; check --train-labels or raise train_size",
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder for every case: none of them may leave a classifier run in it."""
    return tmp_path_factory.mktemp("hostile") / "out"


def _classifier_runs(out: Path) -> list:
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classifier")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _refused(out: Path, files: IdxFiles, encoder: Path, keys: list[str], capsys) -> str:
    """Run `sweep classify`, check it refused before training and recording; its error."""
    argv = ["--output", str(out), "classify", *idx_options(files), "--encoder-from"]
    argv += [str(encoder), "--set", "epochs=1", "units=4", *keys]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "epoch" not in captured.out and "Classifier on" not in captured.out
    assert _classifier_runs(out) == []
    return captured.err


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_is_refused_before_training(
    tmp_path: Path, encoders: dict[str, Path], out: Path, case: str, capsys
) -> None:
    change, message = DATA_CASES[case]
    files = write_dataset(tmp_path / "data", 60, 20)
    change(files)
    assert message in _refused(out, files, encoders["good"], [], capsys)


@pytest.mark.parametrize("encoder", ENCODER_CASES)
def test_bad_encoder_is_refused_before_training(
    tmp_path: Path, encoders: dict[str, Path], out: Path, encoder: str, capsys
) -> None:
    files = write_dataset(tmp_path / "data", 60, 20)
    assert ENCODER_CASES[encoder] in _refused(out, files, encoders[encoder], [], capsys)


@pytest.mark.parametrize("key", CONFIG_CASES)
def test_config_beyond_the_data_is_refused_before_training(
    tmp_path: Path, encoders: dict[str, Path], out: Path, key: str, capsys
) -> None:
    files = write_dataset(tmp_path / "data", 60, 20)
    assert CONFIG_CASES[key] in _refused(out, files, encoders["good"], [key], capsys)


def test_good_inputs_pass_the_checks_and_give_the_trimmed_split_and_encoder(
    tmp_path: Path, encoders: dict[str, Path]
) -> None:
    from sweep.classify import check_inputs
    from sweep.data import find_source, load_training
    from sweep.encoder import EncoderSource
    from sweep.profiles import get_profile

    source = find_source(files=write_dataset(tmp_path / "data", 60, 20))
    split, n_classes = load_training(source, get_profile("quick"), seed=0)
    config = ClassifierConfig(train_size=10, val_size=5)
    encoder_source = EncoderSource(encoders["good"], "file good.keras")
    data, encoder = check_inputs(config, split, n_classes, encoder_source, source.test())
    assert (len(data.x_train), len(data.x_val), n_classes) == (10, 5, 10)
    assert encoder.input_shape == (None, 28, 28, 1) and encoder.name == "encoder"
    assert len(check_inputs(ClassifierConfig(), split, n_classes, encoder_source)[0].x_val) == 12
