"""The encoder a classifier starts from: found (a .keras file, a study's best trial, an MLflow
run) and loaded, every way a file can be wrong being a one-line SweepError."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import SweepError
from sweep.storage import OPTUNA, first_line, first_open, open_storage, store_owner

if TYPE_CHECKING:
    import keras
    import optuna


@dataclass(frozen=True)
class EncoderSource:
    """Where the encoder comes from: a model file, and the MLflow run and trial behind it."""

    path: Path
    description: str
    run_id: str | None = None


def best_autoencoder_trial(
    storage_url: str, study_name: str | None = None
) -> tuple[str, optuna.trial.FrozenTrial] | None:
    """(study, trial) with the lowest val_loss: in `study_name`, else in 'joint' if it exists,
    else over every autoencoder study."""
    return _best_trial(*_read_studies(storage_url), study_name)


def _read_studies(storage_url: str) -> tuple[optuna.storages.BaseStorage | None, list[str]]:
    """The storage, opened read-only, and its study names; (None, []) for a store that no
    sweep has written yet, which a read-only open would refuse."""
    import optuna

    with first_open(storage_url, OPTUNA, lock=False) as tables:
        if store_owner(tables) is None:
            return None, []
    storage = open_storage(storage_url, read_only=True)
    return storage, optuna.get_all_study_names(storage)


def _best_trial(
    storage: optuna.storages.BaseStorage | None, names: list[str], study_name: str | None
) -> tuple[str, optuna.trial.FrozenTrial] | None:
    """best_autoencoder_trial over the studies `names` of an open storage."""
    import optuna

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
    storage, names = _read_studies(storage_url)
    if spec is None or spec in names:
        found = _best_trial(storage, names, spec)
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
    from sweep.tf_env import import_keras_quietly

    keras = import_keras_quietly()
    from models.autoencoder import ENCODER_PREFIX, extract_encoder

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
