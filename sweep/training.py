"""Fit one autoencoder on a split, calling back once per epoch. Knows nothing of Optuna."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import AutoencoderConfig
from sweep.data import Split
from sweep.points import RECONSTRUCTIONS
from sweep.tf_env import import_keras_quietly, runtime_settings

keras = import_keras_quietly(initialise=False)  # devices start with the first fit

EpochHook = Callable[[int, dict[str, float]], None]


class Diverged(RuntimeError):
    """The loss turned NaN or infinite; the trial cannot go on."""


@dataclass
class FitResult:
    """Per-epoch curves (epoch numbers start at 1) and the fit's wall time."""

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best_val_loss(self) -> float:
        return min(self.val_loss)

    @property
    def best_epoch(self) -> int:
        return self.val_loss.index(self.best_val_loss) + 1


class _EpochCallback(keras.callbacks.Callback):
    def __init__(self, result: FitResult, hook: EpochHook | None) -> None:
        super().__init__()
        self.result, self.hook = result, hook

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        if bad:
            key, value = next(iter(bad.items()))
            raise Diverged(f"{key} became {value} at epoch {epoch + 1}")
        self.result.loss.append(logs["loss"])
        self.result.val_loss.append(logs["val_loss"])
        if self.hook is not None:
            self.hook(epoch + 1, logs)


def fit_autoencoder(
    model: keras.Model,
    split: Split,
    config: AutoencoderConfig,
    on_epoch: EpochHook | None = None,
    pipeline: bool | None = None,
) -> FitResult:
    """Train to reconstruct the images, early-stopping on val_loss with the best weights kept.

    `on_epoch(epoch, logs)` runs after every epoch and may raise to stop the fit (pruning).
    `pipeline` feeds a cached, prefetched tf.data pipeline instead of the arrays (default: on a
    GPU with TensorFlow, where it keeps the device busy; on a CPU the arrays are as fast).
    """
    import_keras_quietly()
    result = FitResult()
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience or 1, restore_best_weights=True
        ),
        _EpochCallback(result, on_epoch),
    ]
    if pipeline is None:
        from sweep.tf_env import has_gpu

        pipeline = keras.backend.backend() == "tensorflow" and has_gpu()
    if pipeline:
        inputs = {
            "x": _dataset(split.x_train, config.batch_size, shuffle=True),
            "validation_data": _dataset(split.x_val, config.batch_size, shuffle=False),
            "shuffle": False,  # the pipeline shuffles itself
        }
    else:
        inputs = {
            "x": split.x_train,
            "y": split.x_train,
            "validation_data": (split.x_val, split.x_val),
            "batch_size": config.batch_size,
        }
    start = time.perf_counter()
    try:
        model.fit(**inputs, epochs=config.epochs or 1, callbacks=callbacks, verbose=0)
    finally:
        result.seconds = time.perf_counter() - start
    return result


def train_trial(
    report: Callable[[tuple], None],
    config: AutoencoderConfig,
    data: Split,
    seed: int,
    jit_compile: bool | str,
    model_path: str,
    start_from: str | Path | None = None,
    checkpoint: str | Path | None = None,
) -> FitResult:
    """A sweep trial's training, in or out of the sweep's process (sweep.worker): seed, build
    (from the weights and optimizer state saved at `start_from`, if given), fit, save the
    weights to `checkpoint` (if given) and the model to `model_path`. `report` gets ("built",
    facts) once the model is built and ("epoch", epoch, logs) after each epoch; it may raise
    to stop the fit."""
    import_keras_quietly()
    from models.autoencoder import architecture_rows, build_autoencoder

    seed_everything(seed)
    model = build_autoencoder(config, data.input_shape, jit_compile=jit_compile)
    if start_from is not None:
        model.optimizer.build(model.trainable_variables)  # Adam's moments load too
        model.load_weights(start_from)
    facts = {
        "param_count": model.count_params(),
        "summary": model_summary(model),
        "architecture": architecture_rows(model),
        "runtime": runtime_settings(),
    }
    report(("built", facts))
    fit = fit_autoencoder(model, data, config, lambda epoch, logs: report(("epoch", epoch, logs)))
    if checkpoint is not None:
        model.save_weights(checkpoint)
    model.save(model_path)
    write_reconstructions(model, data.x_val[:RECONSTRUCTED], reconstructions_path(model_path))
    return fit


# The validation images every trial reconstructs: the first of the sweep's seeded split, so
# every trial (and every repeat) of a study shows the same ones and the eye can compare.
RECONSTRUCTED = 8


def reconstructions_path(model_path: str | Path) -> Path:
    """Where train_trial writes its reconstructions: beside the saved model."""
    return Path(model_path).with_name(RECONSTRUCTIONS)


def write_reconstructions(model: keras.Model, images: Any, path: Path) -> None:
    """A PNG of `images` (one row) above the model's reconstructions of them (a second row),
    each 28x28 image shown 3x its size, grayscale 0 (black) to 1 (white). A picture is not
    worth a trial that trained: an error here is printed and the trial goes on without it."""
    if not len(images):
        return
    try:
        _write_reconstructions(model, images, path)
    except Exception as exc:  # noqa: BLE001 - the trial's results stand without the picture
        print(f"reconstructions not written: {type(exc).__name__}: {exc}", file=sys.stderr)


def _write_reconstructions(model: keras.Model, images: Any, path: Path) -> None:
    import numpy as np
    from matplotlib.image import imsave

    rebuilt = np.clip(np.asarray(model.predict(images, verbose=0), dtype=float), 0.0, 1.0)
    rows = [np.concatenate(list(row[..., 0]), axis=1) for row in (images, rebuilt)]
    picture = np.concatenate([rows[0], np.ones((2, rows[0].shape[1])), rows[1]], axis=0)
    picture = np.kron(picture, np.ones((3, 3)))
    imsave(path, picture, cmap="gray", vmin=0.0, vmax=1.0)


def _dataset(images, batch_size: int, shuffle: bool):
    """(image, image) batches, cached after the first pass and prefetched."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, images)).cache()
    if shuffle:
        data = data.shuffle(len(images), reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def model_summary(model: keras.Model) -> str:
    """Keras' summary as plain text."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, line_break=True: lines.append(text))
    return "\n".join(lines)


def seed_everything(seed: int) -> None:
    """Same weight initialisation and shuffling for every trial of a run, so trials differ by
    their hyperparameters, not their luck."""
    keras.utils.set_random_seed(seed)


def live_graphs() -> set[int]:
    """Ids of the TensorFlow graphs alive now; pass them to `release` after a trial."""
    import gc

    if keras.backend.backend() != "tensorflow":
        return set()
    from tensorflow.python.framework import ops

    return {id(obj) for obj in gc.get_objects() if isinstance(obj, ops.Graph)}


def release(graphs_before: set[int] | None = None) -> None:
    """Free a finished trial's graph and memory before the next one.

    With `graphs_before` (from `live_graphs()` at the trial's start), TensorFlow graphs the
    trial traced that outlive it are dismantled: their Python objects form cycles through
    TensorFlow's C++ graph wrappers, which the garbage collector cannot see, so without this
    each trial's train step (and its optimizer's per-variable branch graphs) stays in memory.
    """
    import gc

    keras.backend.clear_session()
    gc.collect()
    if graphs_before is None or keras.backend.backend() != "tensorflow":
        return
    from tensorflow.python.framework import func_graph, ops

    default = ops.get_default_graph()
    left = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, ops.Graph) and id(obj) not in graphs_before and obj is not default
    ]
    for graph in left:
        if isinstance(graph, func_graph.FuncGraph):
            func_graph.dismantle_func_graph(graph)
        else:
            ops.dismantle_graph(graph)
    del left
    gc.collect()
