"""The classifier stage: inputs checked against each other, two training phases on the
encoder (sweep.encoder finds and loads it), one honest evaluation on the test file."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.config import ClassifierConfig
from sweep.data import (
    DataSource,
    Split,
    class_names,
    load_training,
    shift_and_flip,
    to_float_images,
)
from sweep.encoder import EncoderSource, load_encoder
from sweep.errors import SweepError
from sweep.profiles import Profile
from sweep.tf_env import import_keras_quietly

keras = import_keras_quietly()

from models.classifier import build_classifier, set_phase  # noqa: E402
from sweep.tf_env import use_xla  # noqa: E402

log = logging.getLogger(__name__)

EXPERIMENT = "classifier"
EpochHook = Callable[[int, dict[str, float]], None]
# (label, metric key) of the test metrics shown on the summary line
SHOWN_METRICS = (
    ("accuracy", "accuracy"),
    ("precision", "precision_macro"),
    ("recall", "recall_macro"),
    ("F1", "f1_macro"),
)
EXAMPLES = 24


@dataclass
class ClassifierResult:
    run_id: str
    test_metrics: dict[str, float]
    history: pd.DataFrame
    phase_boundary: int
    output: Path


def check_labels(labels: np.ndarray, n_classes: int, what: str) -> None:
    """Every label in 0..n_classes-1, the classes the training labels define."""
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if bad.size:
        raise SweepError(
            f"{what}: label {int(bad[0])} is out of range 0..{n_classes - 1} (the training "
            "labels define the classes); are the label files from the same dataset?"
        )


def check_inputs(
    config: ClassifierConfig,
    split: Split,
    n_classes: int,
    encoder_source: EncoderSource,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Split, keras.Model]:
    """The inputs checked against each other before anything is trained or recorded (each file
    alone is checked as sweep.data reads it): config vs split, at least 2 classes, `test` labels
    in the training classes (None in a sweep), encoder vs images. Returns the trimmed split and
    the loaded encoder."""
    data = split.take(config.train_size, config.val_size)
    classes = np.unique(data.y_train)
    if len(classes) < 2:
        hint = " or raise train_size" if config.train_size else ""
        raise SweepError(
            f"the training images ({len(data.y_train)}) all have label {int(classes[0])}: a "
            f"classifier needs at least 2 classes; check --train-labels{hint}"
        )
    if test is not None:
        check_labels(test[1], n_classes, "test labels")
    return data, load_encoder(encoder_source, data.input_shape)


class _EpochLog(keras.callbacks.Callback):
    """Logs every metric per epoch to MLflow, steps continuing across phases, and one progress
    line; then calls `on_epoch(step, values)`, which may raise to stop the fit (pruning)."""

    def __init__(
        self, run: Any, phase: int, offset: int, rows: list, on_epoch: EpochHook | None = None
    ) -> None:
        super().__init__()
        self.run, self.phase, self.offset, self.rows = run, phase, offset, rows
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = self.offset + epoch + 1
        values = {k: float(v) for k, v in (logs or {}).items()}
        rate = self.model.optimizer.learning_rate
        values["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        self.run.log_epoch(step, {**values, "phase": float(self.phase)})
        self.rows.extend(
            {"epoch": step, "metric": k, "value": v, "phase": self.phase} for k, v in values.items()
        )
        log.info(
            f"    phase {self.phase} epoch {step:>3}  loss {values['loss']:.4f}  "
            f"acc {values['accuracy']:.4f}  val_loss {values['val_loss']:.4f}  "
            f"val_acc {values['val_accuracy']:.4f}  lr {values['learning_rate']:.2g}"
        )
        if self.on_epoch is not None:
            self.on_epoch(step, values)


@dataclass
class Prepared:
    """The data and the fresh model of one classifier training."""

    data: Split
    n_classes: int
    model: Any
    epochs: int
    seed: int = 0


def prepare(
    config: ClassifierConfig,
    profile: Profile,
    split: Split,
    n_classes: int,
    encoder_source: EncoderSource,
    seed: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Prepared:
    """Check the inputs (see check_inputs), load a fresh copy of the encoder and build the
    classifier on it."""
    keras.utils.set_random_seed(seed)
    data, encoder = check_inputs(config, split, n_classes, encoder_source, test)
    model = build_classifier(encoder, config, n_classes)
    return Prepared(data, n_classes, model, config.epochs or profile.epochs, seed)


class AugmentedBatches(keras.utils.PyDataset):
    """Training batches, reshuffled every epoch, each image shifted by up to MAX_SHIFT pixels
    (and mirrored, for shift_flip) as it is drawn: numpy on the host, as fast on any backend
    and device, and the saved model holds no augmentation layers."""

    MAX_SHIFT = 3  # about 10% of a 28-pixel image

    def __init__(self, x, y, batch_size: int, augment: str, seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.flip = augment == "shift_flip"
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return shift_and_flip(self.x[chosen], self.rng, self.MAX_SHIFT, self.flip), self.y[chosen]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def phase_callbacks(phase: int, config: ClassifierConfig) -> list:
    """Early stopping on val_loss (best weights kept) in both phases; in phase 2 the learning
    rate is also multiplied by `lr_factor` after max(1, patience // 2) epochs on a plateau."""
    callbacks: list = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        )
    ]
    if phase == 2 and config.lr_factor < 1:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=config.lr_factor,
                patience=max(1, config.patience // 2),
                min_lr=config.finetune_learning_rate / 100,
            )
        )
    return callbacks


def _training_inputs(
    prepared: Prepared, config: ClassifierConfig, y_train: np.ndarray, phase: int
) -> dict[str, Any]:
    """The training arguments of `fit`: the arrays, or augmented batches seeded per phase."""
    data = prepared.data
    if config.augment == "none":
        return {"x": data.x_train, "y": y_train, "batch_size": config.batch_size}
    seed = prepared.seed + phase
    return {"x": AugmentedBatches(data.x_train, y_train, config.batch_size, config.augment, seed)}


def train_two_phases(
    prepared: Prepared, config: ClassifierConfig, run: Any, on_epoch: EpochHook | None = None
) -> tuple[pd.DataFrame, int, float]:
    """Phase 1 with the encoder frozen, phase 2 fine-tuning every layer (see phase_callbacks).
    `on_epoch(step, values)` runs after every epoch and may raise to stop (pruning). Returns
    the per-epoch rows, the last epoch of phase 1 and the training time."""
    data, model = prepared.data, prepared.model
    y_train = keras.utils.to_categorical(data.y_train, prepared.n_classes)
    y_val = keras.utils.to_categorical(data.y_val, prepared.n_classes)
    rows: list[dict[str, Any]] = []
    offset = boundary = 0
    start = time.perf_counter()
    for phase in (1, 2):
        set_phase(model, phase, config, jit_compile=use_xla())
        log.info(
            f"  phase {phase}: {'encoder frozen' if phase == 1 else 'fine-tuning every layer'}"
        )
        history = model.fit(
            **_training_inputs(prepared, config, y_train, phase),
            validation_data=(data.x_val, y_val),
            epochs=prepared.epochs if phase == 2 else config.frozen_epochs or prepared.epochs,
            verbose=0,
            callbacks=[
                *phase_callbacks(phase, config),
                _EpochLog(run, phase, offset, rows, on_epoch),
            ],
        )
        if phase == 1:
            boundary = offset = len(history.history["loss"])
    seconds = time.perf_counter() - start
    run.log_results({"train_seconds": seconds, "phase_boundary": boundary})
    return pd.DataFrame(rows), boundary, seconds


def run_classifier(
    config: ClassifierConfig,
    profile: Profile,
    source: DataSource,
    encoder_source: EncoderSource,
    tracker: Any,
    output: Path,
    *,
    seed: int = 0,
) -> ClassifierResult:
    """Every input checked, then phase 1 (frozen encoder), phase 2 (fine-tuning) and one
    evaluation on the test file (read before training only to be checked)."""
    split, n_classes = load_training(source, profile, seed)
    x_test, y_test = source.test()
    prepared = prepare(config, profile, split, n_classes, encoder_source, seed, (x_test, y_test))
    data = prepared.data
    params = {
        **config.to_dict(),
        "epochs": prepared.epochs,
        "profile": profile.name,
        "dataset": source.name,
        "seed": seed,
        "n_classes": n_classes,
        "train_images": len(data.x_train),
        "val_images": len(data.x_val),
        "encoder": encoder_source.description,
    }
    tags = {"sweep.encoder_run_id": encoder_source.run_id or "", "sweep.role": "classifier"}
    log.info(
        f"Classifier on {source.name} ({len(data.x_train)} train / {len(data.x_val)} validation "
        f"images, {n_classes} classes), encoder from {encoder_source.description}"
    )
    with tracker.run(EXPERIMENT, "classifier", params, tags) as run:
        history, boundary, _ = train_two_phases(prepared, config, run)
        metrics, folder = _evaluate(
            prepared.model, x_test, y_test, n_classes, source.name, run, output
        )
        run.log_results(metrics)
        run.log_model(prepared.model, "classifier.keras")
        shown = "  ".join(f"{name} {metrics['test_' + key]:.4f}" for name, key in SHOWN_METRICS)
        log.info(f"Test ({len(x_test)} images, evaluated once): {shown}")
        log.info(f"Figures and tables: {folder}")
        return ClassifierResult(run.run_id, metrics, history, boundary, folder)


def _evaluate(
    model, images: np.ndarray, labels: np.ndarray, n_classes: int, dataset: str, run, output: Path
) -> tuple[dict[str, float], Path]:
    """Predict the test images once; write and log the metrics, tables and figures."""
    x = to_float_images(images)
    predicted = model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)
    names = class_names(dataset, n_classes)
    folder = output / "classifier" / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    metrics, matrix = _write_tables(labels, predicted, names, folder)
    _save_figures(x, labels, predicted, names, matrix, folder)
    for path in sorted(folder.iterdir()):
        run.log_file(path, "evaluation")
    return metrics, folder


def _write_tables(
    labels: np.ndarray, predicted: np.ndarray, names: list[str], folder: Path
) -> tuple[dict[str, float], pd.DataFrame]:
    """Test metrics (macro and per class), the per-class table and the confusion matrix,
    written to `folder`; returns the metrics and the matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    metrics = {
        "test_accuracy": float(accuracy_score(labels, predicted)),
        "test_precision_macro": float(precision.mean()),
        "test_recall_macro": float(recall.mean()),
        "test_f1_macro": float(f1.mean()),
    }
    for i in classes:
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            metrics[f"test_{name}_class_{i}"] = float(values[i])
    per_class = pd.DataFrame(
        {"class": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    matrix = pd.DataFrame(
        confusion_matrix(labels, predicted, labels=classes), index=names, columns=names
    )
    per_class.to_csv(folder / "per_class.csv", index=False)
    matrix.to_csv(folder / "confusion_matrix.csv")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, matrix


def _save_figures(
    x: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    names: list[str],
    matrix: pd.DataFrame,
    folder: Path,
) -> None:
    """The confusion matrix and sampled correct and misclassified test images, as PNGs."""
    import matplotlib.pyplot as plt

    from reports.figures import plot_confusion_matrix, plot_examples

    rng = np.random.default_rng(0)
    figures = {"confusion_matrix.png": plot_confusion_matrix(matrix)}
    for name, chosen, title in (
        ("correct.png", predicted == labels, "Correctly classified test images"),
        ("incorrect.png", predicted != labels, "Misclassified test images"),
    ):
        indices = np.flatnonzero(chosen)
        if len(indices):
            indices = rng.choice(indices, size=min(EXAMPLES, len(indices)), replace=False)
        shown = [names[i] for i in labels[indices]], [names[i] for i in predicted[indices]]
        figures[name] = plot_examples(x[indices], *shown, title)
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
