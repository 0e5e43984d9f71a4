"""The classifier stage: the best encoder, two training phases, one honest test evaluation."""

from __future__ import annotations

import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from models.config import ClassifierConfig
from sweep.data import DataSource, Split, class_names, shift_and_flip, subset_and_split
from sweep.errors import SweepError
from sweep.profiles import Profile
from sweep.storage import first_line
from sweep.tf_env import import_keras_quietly

keras = import_keras_quietly()

from models.autoencoder import ENCODER_PREFIX, extract_encoder  # noqa: E402
from models.classifier import build_classifier, set_phase  # noqa: E402
from sweep.tf_env import use_xla  # noqa: E402

EXPERIMENT = "classifier"


@dataclass(frozen=True)
class EncoderSource:
    """Where the encoder comes from: a model file, and the MLflow run and trial behind it."""

    path: Path
    description: str
    run_id: str | None = None


@dataclass
class ClassifierResult:
    run_id: str
    test_metrics: dict[str, float]
    history: pd.DataFrame
    phase_boundary: int
    output: Path


def best_autoencoder_trial(storage_url: str, study_name: str | None = None):
    """(study, trial) with the lowest val_loss: in `study_name`, else in 'joint' if it exists,
    else over every autoencoder study."""
    import optuna

    from sweep.storage import open_storage

    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if study_name is not None:
        chosen = [study_name]
    elif "joint" in names:
        chosen = ["joint"]
    else:
        chosen = names
    best = None
    for name in chosen:
        study = optuna.load_study(study_name=name, storage=storage)
        if study.user_attrs.get("kind", "autoencoder") != "autoencoder":
            continue
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "mlflow_run_id" in trial.user_attrs and (
                best is None or trial.value < best[1].value
            ):
                best = (name, trial)
    return best


def resolve_encoder(
    spec: str | None, storage_url: str, tracker: Any, workdir: Path
) -> EncoderSource:
    """`spec`: a .keras file, a study name, an MLflow run id, or None for the best trial."""
    if spec and spec.endswith(".keras"):
        path = Path(spec)
        if not path.is_file():
            raise SweepError(f"--encoder-from {spec}: file not found")
        return EncoderSource(path, f"file {path}")
    import optuna

    from sweep.storage import open_storage

    studies = set(optuna.get_all_study_names(open_storage(storage_url)))
    if spec is None or spec in studies:
        found = best_autoencoder_trial(storage_url, spec)
        if found is None:
            raise SweepError(
                "no complete autoencoder trial to take an encoder from; run a sweep first "
                "(make sweep-filters) or pass --encoder-from PATH.keras"
            )
        name, trial = found
        run_id = trial.user_attrs["mlflow_run_id"]
        description = f"study {name}, trial {trial.number} (val_loss {trial.value:.5f})"
    else:
        run_id, description = spec, f"MLflow run {spec}"
    try:
        path = Path(tracker.client.download_artifacts(run_id, "model.keras", str(workdir)))
    except Exception as exc:  # noqa: BLE001 - unknown run, missing artifact, unreachable server
        raise SweepError(
            f"--encoder-from {spec or 'best trial'}: cannot fetch model.keras of run {run_id} "
            f"({type(exc).__name__}); pass a study name, a run id or a .keras file"
        ) from None
    return EncoderSource(path, description, run_id)


def load_encoder(source: EncoderSource, input_shape: tuple[int, ...]) -> keras.Model:
    """The encoder cut out of the autoencoder in `source`, for images of `input_shape`; any
    other file (not Keras, not this project's, another image size) is a one-line SweepError."""
    where = f"the encoder ({source.description})"
    if not zipfile.is_zipfile(source.path):
        raise SweepError(
            f"{where} is not a Keras file (a .keras file is a zip archive); pass --encoder-from "
            "the model.keras of an autoencoder trial"
        )
    try:
        model = keras.models.load_model(source.path, compile=False)
    except Exception as exc:  # noqa: BLE001 - a foreign archive fails in many ways
        raise SweepError(
            f"{where} is not a Keras model this project can load "
            f"({type(exc).__name__}: {first_line(exc)}); pass --encoder-from the model.keras of "
            "an autoencoder trial"
        ) from None
    try:
        encoder = extract_encoder(model)
    except ValueError:
        raise SweepError(
            f"{where} is a Keras model without the encoder layers ({ENCODER_PREFIX}*); pass "
            "--encoder-from an autoencoder saved by this project, not a classifier or other model"
        ) from None
    if tuple(encoder.input_shape[1:]) != tuple(input_shape):
        raise SweepError(
            f"{where} takes images of {tuple(encoder.input_shape[1:])} but the data has "
            f"{tuple(input_shape)}; pass an encoder trained on images of this size"
        )
    return encoder


def check_labels(labels: np.ndarray, n_classes: int, what: str) -> None:
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
    """Logs every metric per epoch to MLflow, steps continuing across phases."""

    def __init__(self, run: Any, phase: int, offset: int, rows: list, say, hook=None) -> None:
        super().__init__()
        self.run, self.phase, self.offset, self.rows, self.say = run, phase, offset, rows, say
        self.hook = hook

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        step = self.offset + epoch + 1
        values = {k: float(v) for k, v in (logs or {}).items()}
        rate = self.model.optimizer.learning_rate
        values["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
        self.run.log_epoch(step, {**values, "phase": float(self.phase)})
        self.rows.extend(
            {"epoch": step, "metric": k, "value": v, "phase": self.phase} for k, v in values.items()
        )
        self.say(
            f"    phase {self.phase} epoch {step:>3}  loss {values['loss']:.4f}  "
            f"acc {values['accuracy']:.4f}  val_loss {values['val_loss']:.4f}  "
            f"val_acc {values['val_accuracy']:.4f}  lr {values['learning_rate']:.2g}"
        )
        if self.hook is not None:
            self.hook(step, values)


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


def train_two_phases(
    prepared: Prepared, config: ClassifierConfig, run: Any, say, hook=None
) -> tuple[pd.DataFrame, int, float]:
    """Phase 1 with the encoder frozen, phase 2 fine-tuning every layer (see phase_callbacks).
    Returns the per-epoch rows, the last epoch of phase 1 and the training time."""
    data, model = prepared.data, prepared.model
    y_train = keras.utils.to_categorical(data.y_train, prepared.n_classes)
    y_val = keras.utils.to_categorical(data.y_val, prepared.n_classes)
    rows: list[dict[str, Any]] = []
    offset = boundary = 0
    start = time.perf_counter()
    for phase in (1, 2):
        set_phase(model, phase, config, jit_compile=use_xla())
        say(f"  phase {phase}: {'encoder frozen' if phase == 1 else 'fine-tuning every layer'}")
        callbacks = phase_callbacks(phase, config)
        if config.augment == "none":
            train = {"x": data.x_train, "y": y_train, "batch_size": config.batch_size}
        else:
            batches = AugmentedBatches(
                data.x_train, y_train, config.batch_size, config.augment, prepared.seed + phase
            )
            train = {"x": batches}
        history = model.fit(
            **train,
            validation_data=(data.x_val, y_val),
            epochs=prepared.epochs if phase == 2 else config.frozen_epochs or prepared.epochs,
            verbose=0,
            callbacks=[*callbacks, _EpochLog(run, phase, offset, rows, say, hook)],
        )
        if phase == 1:
            boundary = offset = len(history.history["loss"])
    seconds = time.perf_counter() - start
    run.log_results({"train_seconds": seconds, "phase_boundary": boundary})
    return pd.DataFrame(rows), boundary, seconds


def load_training(source: DataSource, profile: Profile, seed: int) -> tuple[Split, int]:
    """The seeded train/validation split of the training file and the number of classes."""
    images, labels = source.training()
    split = subset_and_split(
        images, labels, subset=profile.subset, val_fraction=profile.val_fraction, seed=seed
    )
    return split, int(labels.max()) + 1


def run_classifier(
    config: ClassifierConfig,
    profile: Profile,
    source: DataSource,
    encoder_source: EncoderSource,
    tracker: Any,
    output: Path,
    *,
    seed: int = 0,
    stream: TextIO | None = None,
) -> ClassifierResult:
    """Every input checked, then phase 1 (frozen encoder), phase 2 (fine-tuning) and one
    evaluation on the test file (read before training only to be checked)."""
    stream = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

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
    say(
        f"Classifier on {source.name} ({len(data.x_train)} train / {len(data.x_val)} validation "
        f"images, {n_classes} classes), encoder from {encoder_source.description}"
    )
    with tracker.run(EXPERIMENT, "classifier", params, tags) as run:
        history, boundary, _ = train_two_phases(prepared, config, run, say)
        metrics, folder = _evaluate(
            prepared.model, x_test, y_test, n_classes, source.name, run, output
        )
        run.log_results(metrics)
        run.log_model(prepared.model, "classifier.keras")
        shown = "  ".join(
            f"{name} {metrics['test_' + key]:.4f}"
            for name, key in (
                ("accuracy", "accuracy"),
                ("precision", "precision_macro"),
                ("recall", "recall_macro"),
                ("F1", "f1_macro"),
            )
        )
        say(f"Test ({len(x_test)} images, evaluated once): {shown}\nFigures and tables: {folder}")
        return ClassifierResult(run.run_id, metrics, history, boundary, folder)


def _evaluate(
    model, images: np.ndarray, labels: np.ndarray, n_classes: int, dataset: str, run, output: Path
):
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from reports.figures import plot_confusion_matrix, plot_examples
    from sweep.data import to_float_images

    x = to_float_images(images)
    predicted = model.predict(x, batch_size=1024, verbose=0).argmax(axis=1)
    names = class_names(dataset, n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(n_classes)), zero_division=0
    )
    metrics = {
        "test_accuracy": float(accuracy_score(labels, predicted)),
        "test_precision_macro": float(precision.mean()),
        "test_recall_macro": float(recall.mean()),
        "test_f1_macro": float(f1.mean()),
    }
    for i in range(n_classes):
        metrics.update({f"test_precision_class_{i}": float(precision[i]),
                        f"test_recall_class_{i}": float(recall[i]),
                        f"test_f1_class_{i}": float(f1[i])})  # fmt: skip
    folder = output / "classifier" / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    per_class = pd.DataFrame(
        {"class": names, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    matrix = pd.DataFrame(
        confusion_matrix(labels, predicted, labels=list(range(n_classes))),
        index=names,
        columns=names,
    )
    per_class.to_csv(folder / "per_class.csv", index=False)
    matrix.to_csv(folder / "confusion_matrix.csv")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    rng = np.random.default_rng(0)
    right, wrong = np.flatnonzero(predicted == labels), np.flatnonzero(predicted != labels)
    figures = {
        "confusion_matrix.png": plot_confusion_matrix(matrix),
        "correct.png": _examples(
            plot_examples,
            x,
            labels,
            predicted,
            names,
            rng,
            right,
            "Correctly classified test images",
        ),
        "incorrect.png": _examples(
            plot_examples, x, labels, predicted, names, rng, wrong, "Misclassified test images"
        ),
    }
    import matplotlib.pyplot as plt

    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    for path in sorted(folder.iterdir()):
        run.log_file(path, "evaluation")
    return metrics, folder


def _examples(plot, x, labels, predicted, names, rng, indices, title):
    chosen = (
        rng.choice(indices, size=min(24, len(indices)), replace=False) if len(indices) else indices
    )
    return plot(
        x[chosen], [names[i] for i in labels[chosen]], [names[i] for i in predicted[chosen]], title
    )
