"""The classifier stage: frozen then fine-tuned encoder, honest test evaluation, lineage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from sweep.cli import main
from sweep.tf_env import import_keras_quietly
from tests.conftest import idx_options, make_images, write_dataset

keras = import_keras_quietly()

from models.autoencoder import build_autoencoder, extract_encoder  # noqa: E402
from models.classifier import build_classifier, set_phase  # noqa: E402
from models.config import AutoencoderConfig, ClassifierConfig  # noqa: E402


def weights(model: keras.Model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def test_phase_1_leaves_the_encoder_unchanged_and_phase_2_changes_it() -> None:
    encoder = extract_encoder(build_autoencoder(AutoencoderConfig(filters=(2, 4))))
    config = ClassifierConfig(units=8, dropout=0.2)
    model = build_classifier(encoder, config, n_classes=3)
    assert model.output_shape == (None, 3)
    assert model.get_layer("dropout").rate == pytest.approx(0.2)
    images, labels = make_images(64)
    x = images[..., None].astype("float32") / 255
    y = keras.utils.to_categorical(labels % 3, 3)
    before = weights(model.get_layer("encoder"))
    head_before = weights(model.get_layer("dense"))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after_phase_1 = weights(model.get_layer("encoder"))
    assert all(np.array_equal(a, b) for a, b in zip(before, after_phase_1, strict=True))
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(head_before, weights(model.get_layer("dense")), strict=True)
    )
    set_phase(model, 2, config)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    after_phase_2 = weights(model.get_layer("encoder"))
    assert not all(np.array_equal(a, b) for a, b in zip(before, after_phase_2, strict=True))


def test_phase_2_lowers_the_learning_rate_on_plateaus_unless_disabled() -> None:
    from sweep.classify import phase_callbacks

    config = ClassifierConfig(patience=5, lr_factor=0.3, finetune_learning_rate=2e-4)
    assert [type(c).__name__ for c in phase_callbacks(1, config)] == ["EarlyStopping"]
    stop, plateau = phase_callbacks(2, config)
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_loss", 5, True)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert (plateau.monitor, plateau.factor, plateau.patience) == ("val_loss", 0.3, 2)
    assert plateau.min_lr == pytest.approx(2e-6)
    assert len(phase_callbacks(2, config.replace(lr_factor=1))) == 1
    with pytest.raises(ValueError, match="lr_factor must be a number above 0"):
        config.replace(lr_factor=0)


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    path = tmp_path / "ae.keras"
    build_autoencoder(AutoencoderConfig(filters=(2, 4))).save(path)
    return path


def classify(out: Path, files, *extra: str) -> int:
    return main(
        [
            "--output",
            str(out),
            "classify",
            *idx_options(files),
            "--set",
            "epochs=2",
            "units=8",
            "batch_size=32",
            *extra,
        ]
    )


@pytest.mark.slow
def test_tiny_end_to_end_logs_every_metric_checks_the_test_file_first_evaluates_it_last(
    tmp_path: Path, encoder_file: Path, monkeypatch, capsys
) -> None:
    import sweep.classify as classify_module
    from sweep.data import DataSource

    files = write_dataset(tmp_path / "data", 200, 50)
    events: list[str] = []
    real_test, real_log = DataSource.test, classify_module._EpochLog.on_epoch_end
    real_evaluate = classify_module._evaluate

    def spy_test(self):
        events.append("test")
        return real_test(self)

    def spy_log(self, epoch, logs=None):
        events.append(f"epoch{self.phase}")
        return real_log(self, epoch, logs)

    def spy_evaluate(*args):
        events.append("evaluate")
        return real_evaluate(*args)

    monkeypatch.setattr(DataSource, "test", spy_test)
    monkeypatch.setattr(classify_module._EpochLog, "on_epoch_end", spy_log)
    monkeypatch.setattr(classify_module, "_evaluate", spy_evaluate)
    out = tmp_path / "out"
    assert (
        classify(
            out, files, "frozen_epochs=1", "augment=shift_flip", "--encoder-from", str(encoder_file)
        )
        == 0
    )
    assert events == ["test", "epoch1", "epoch2", "epoch2", "evaluate"]
    assert "evaluated once" in capsys.readouterr().out

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classifier")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    for key in ("test_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert {f"test_f1_class_{i}" for i in range(10)} <= set(metrics)
    history = sorted(
        client.get_metric_history(run.info.run_id, "val_accuracy"), key=lambda m: m.step
    )
    assert [m.step for m in history] == [1, 2, 3]
    phases = sorted(client.get_metric_history(run.info.run_id, "phase"), key=lambda m: m.step)
    assert [m.value for m in phases] == [1, 2, 2]
    rates = sorted(
        client.get_metric_history(run.info.run_id, "learning_rate"), key=lambda m: m.step
    )
    assert [m.value for m in rates[:2]] == pytest.approx([1e-3, 1e-4])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/confusion_matrix.csv",
        "evaluation/correct.png",
        "evaluation/incorrect.png",
        "evaluation/per_class.csv",
    } <= artifacts
    folder = out / "classifier" / run.info.run_id
    matrix = np.loadtxt(
        folder / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 11)
    )
    assert matrix.sum() == 50
    assert np.trace(matrix) / 50 == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
def test_default_encoder_is_the_best_trial_and_its_run_is_the_lineage(
    tmp_path: Path, tiny_space: Path, idx_files, idx_args
) -> None:
    import optuna

    out = tmp_path / "out"
    assert main(["--output", str(out), "run", str(tiny_space), "--n-trials", "2", *idx_args]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert classify(out, idx_files) == 0
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert run.data.tags["sweep.encoder_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert f"trial {study.best_trial.number}" in run.data.params["encoder"]

    from reports.build import build_report

    report = build_report(
        f"sqlite:///{out / 'optuna.db'}", f"sqlite:///{out / 'mlflow.db'}", out / "r.pdf"
    )
    assert list(report.sections) == ["title", "tiny", "best encoder", "classifier stage"]
    assert report.sections["classifier stage"] == [
        "Classifier stage: test metrics",
        "Classifier: training curves (phase 1 frozen encoder, phase 2 fine-tuning)",
        "Confusion matrix (test set)",
        "Classifier stage: correct test images (sampled)",
        "Classifier stage: incorrect test images (sampled)",
    ]


def test_three_classes_come_from_the_labels(tmp_path: Path, encoder_file: Path) -> None:
    from sweep.classify import check_labels
    from sweep.errors import SweepError

    check_labels(np.array([0, 1, 2]), 3, "test labels")
    with pytest.raises(SweepError, match="label 3 is out of range 0..2"):
        check_labels(np.array([0, 3]), 3, "test labels")


@pytest.mark.parametrize(
    "case", ["test label out of range", "label count", "image size", "no encoder"]
)
def test_bad_inputs_are_one_line_errors(
    tmp_path: Path, encoder_file: Path, case: str, capsys
) -> None:
    from sweep.idx import write_idx

    files = write_dataset(tmp_path / "data", 60, 20)
    extra = ["--encoder-from", str(encoder_file)]
    if case == "test label out of range":
        labels = np.full(20, 12, np.uint8)
        write_idx(files.test_labels, labels)
        message = "label 12 is out of range 0..9"
    elif case == "label count":
        write_idx(files.train_labels, np.zeros(59, np.uint8))
        message = "59 labels for 60 images"
    elif case == "image size":
        write_idx(files.train_images, np.zeros((60, 32, 32), np.uint8))
        write_idx(files.test_images, np.zeros((20, 32, 32), np.uint8))
        message = "takes images of (28, 28, 1) but the data has (32, 32, 1)"
    else:
        extra = []
        message = "no complete autoencoder trial"
    assert classify(tmp_path / "out", files, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_classifier_set_keys_are_checked(tmp_path: Path, encoder_file: Path, capsys) -> None:
    files = write_dataset(tmp_path / "data", 20, 5)
    assert (
        classify(tmp_path / "out", files, "dropout=1.5", "--encoder-from", str(encoder_file)) == 2
    )
    assert "dropout must be a number from 0 to below 1" in capsys.readouterr().err


@pytest.mark.slow
def test_classifier_space_runs_through_the_study_machinery_maximising_val_accuracy(
    tmp_path: Path, encoder_file: Path, monkeypatch, capsys
) -> None:
    import optuna

    from sweep.data import DataSource

    files = write_dataset(tmp_path / "data", 120, 30)
    space = tmp_path / "clf.yaml"
    space.write_text(
        "study: clf\nkind: classifier\nbase: {units: 8, batch_size: 32, epochs: 1}\n"
        "params: {dropout: {values: [0.0, 0.5]}}\n"
    )
    touched = []
    real_test = DataSource.test
    monkeypatch.setattr(DataSource, "test", lambda self: touched.append(1) or real_test(self))
    out = str(tmp_path / "out")
    code = main(
        [
            "--output",
            out,
            "run",
            str(space),
            "--encoder-from",
            str(encoder_file),
            *idx_options(files),
        ]
    )
    assert code == 0
    assert touched == []
    study = optuna.load_study(
        study_name="clf", storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}"
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["metric"] == "val_accuracy"
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2
    assert all(0 <= t.value <= 1 and t.intermediate_values for t in study.trials)
    assert "best val_accuracy" in capsys.readouterr().out


def test_augmented_batches_shift_and_mirror_each_image_and_reshuffle() -> None:
    from sweep.classify import AugmentedBatches
    from sweep.data import shift_and_flip

    images = np.zeros((3, 8, 8, 1), dtype=np.float32)
    images[:, 2, 3, 0] = 1.0  # one bright pixel at row 2, column 3

    class Fixed:  # dy, dx per image; image 2 mirrored
        def integers(self, low, high, size):
            return np.array([[1, 0, -2], [0, -3, 1]])

        def random(self, n):
            return np.array([0.9, 0.9, 0.1])

    moved = shift_and_flip(images, Fixed(), 3, flip=True)
    assert moved.shape == images.shape
    assert [tuple(np.argwhere(m[..., 0])[0]) for m in moved] == [(3, 3), (2, 0), (0, 3)]
    assert moved.sum() == 3  # nothing duplicated; pixels shifted out would be zero-filled
    edge = shift_and_flip(images, np.random.default_rng(0), 0, flip=False)
    np.testing.assert_array_equal(edge, images)

    x = np.random.default_rng(1).random((10, 28, 28, 1), dtype=np.float32)
    y = np.arange(10)
    batches = AugmentedBatches(x, y, batch_size=4, augment="shift_flip", seed=0)
    assert len(batches) == 3
    seen = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(seen) == list(range(10))  # every image once per epoch
    first_order = batches.order.copy()
    batches.on_epoch_end()
    assert not np.array_equal(first_order, batches.order)
    xb, yb = batches[0]
    assert xb.shape == (4, 28, 28, 1) and not np.allclose(xb, x[yb])


def test_the_classifier_holds_no_augmentation_layers() -> None:
    encoder = extract_encoder(build_autoencoder(AutoencoderConfig(filters=(2, 4))))
    model = build_classifier(encoder, ClassifierConfig(augment="shift_flip"), n_classes=3)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "encoder", "flatten", "dense", "classes"]
