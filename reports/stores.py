"""Read the Optuna storage and the MLflow store into pandas DataFrames. Nothing here trains."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from sweep.errors import SweepError
from sweep.storage import mask_url, open_storage

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("mlflow").setLevel(logging.WARNING)
optuna.logging.set_verbosity(optuna.logging.ERROR)

PACKAGES = ("tensorflow", "keras", "optuna", "mlflow", "pandas", "seaborn")


@dataclass
class StudyData:
    """Everything the report shows about one study, as DataFrames.

    `trials`: one row per trial (number, state, value, train_seconds, param_count, run_id,
    fail_reason and one column per parameter, as stored). `curves`: long format (trial, metric,
    epoch, value) from MLflow. `intermediate`: the val_loss Optuna saw per epoch (for pruning).
    """

    name: str
    params: list[str]
    value_order: dict[str, list[Any]]
    trials: pd.DataFrame
    curves: pd.DataFrame
    intermediate: pd.DataFrame
    architectures: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    study: optuna.Study | None = None
    kind: str = "autoencoder"
    metric: str = "val_loss"
    maximize: bool = False

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == "complete"]

    @property
    def is_one_factor(self) -> bool:
        return len(self.params) == 1


def study_names(storage_url: str) -> list[str]:
    return sorted(optuna.get_all_study_names(open_storage(storage_url)))


def load_study_data(storage_url: str, tracking_uri: str, name: str) -> StudyData:
    """One study's trials from Optuna, and its curves and architectures from MLflow."""
    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(sorted(optuna.get_all_study_names(storage))) or "none"
        raise SweepError(
            f"no study {name!r} in {mask_url(storage_url)} (studies: {known}); "
            "run its sweep first, e.g. make sweep-filters"
        ) from None
    frozen = study.get_trials(deepcopy=False)
    params, order = _param_order(frozen)
    trials = pd.DataFrame([_trial_row(t, params) for t in frozen])
    if trials.empty:
        trials = pd.DataFrame(columns=["number", "state", "value", *params])
    intermediate = pd.DataFrame(
        [
            {"trial": t.number, "epoch": step, "value": value, "state": t.state.name.lower()}
            for t in frozen
            for step, value in sorted(t.intermediate_values.items())
        ],
        columns=["trial", "epoch", "value", "state"],
    )
    curves, architectures, run_params = _from_mlflow(tracking_uri, name, trials)
    return StudyData(
        name=name,
        params=params,
        value_order=order,
        trials=trials,
        curves=curves,
        intermediate=intermediate,
        architectures=architectures,
        run_params=run_params,
        study=study,
        kind=study.user_attrs.get("kind", "autoencoder"),
        metric=study.user_attrs.get("metric", "val_loss"),
        maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )


def _param_order(trials: list[optuna.trial.FrozenTrial]) -> tuple[list[str], dict[str, list]]:
    """Parameter names in first-seen order; categorical values in the order the space lists."""
    params: dict[str, list] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if name not in params:
                params[name] = (
                    list(dist.choices) if isinstance(dist, CategoricalDistribution) else []
                )
    return list(params), params


def _trial_row(trial: optuna.trial.FrozenTrial, params: list[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": {"fail": "failed"}.get(trial.state.name.lower(), trial.state.name.lower()),
        "value": trial.value,
        "train_seconds": attrs.get("train_seconds"),
        "param_count": attrs.get("param_count"),
        "best_epoch": attrs.get("best_epoch"),
        "run_id": attrs.get("mlflow_run_id"),
        "fail_reason": attrs.get("fail_reason"),
        **{name: trial.params.get(name) for name in params},
    }


def _from_mlflow(
    tracking_uri: str, name: str, trials: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    empty = pd.DataFrame(columns=["trial", "metric", "epoch", "value"])
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 - any connection error
        raise SweepError(f"cannot read MLflow at {mask_url(tracking_uri)}: {exc}") from None
    if experiment is None:
        return empty, {}, {}
    runs = client.search_runs([experiment.experiment_id])
    parent = next((r for r in runs if r.data.tags.get("sweep.role") == "study"), None)
    run_params = dict(parent.data.params) if parent else {}
    rows = []
    architectures: dict[str, pd.DataFrame] = {}
    by_run = {r.info.run_id: r for r in runs}
    for trial_number, run_id in zip(
        trials.get("number", []), trials.get("run_id", []), strict=True
    ):
        if not run_id or run_id not in by_run:
            continue
        for metric in ("loss", "val_loss"):
            for m in client.get_metric_history(run_id, metric):
                rows.append(
                    {"trial": trial_number, "metric": metric, "epoch": m.step, "value": m.value}
                )
        run = by_run[run_id]
        key = _architecture_key(run.data.params)
        if key not in architectures:
            table = _architecture(client, run_id)
            if table is not None:
                architectures[key] = table
        run_params = run_params or {
            k: v for k, v in run.data.params.items() if k in ("profile", "dataset")
        }
    curves = pd.DataFrame(rows, columns=empty.columns)
    if not curves.empty:
        curves = curves.sort_values(["trial", "metric", "epoch"]).drop_duplicates(
            ["trial", "metric", "epoch"], keep="last"
        )
    return curves, architectures, run_params


def _architecture_key(params: dict[str, str]) -> str:
    return "  ".join(f"{k}={params.get(k)}" for k in ("filters", "pool_blocks", "kernel_size"))


def _architecture(client: Any, run_id: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "architecture.json", tmp)
        except Exception:  # noqa: BLE001 - a trial that failed before logging it
            return None
        return pd.DataFrame(json.loads(Path(path).read_text()))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class ClassifierData:
    """The latest complete `sweep classify` run: curves, test metrics, evaluation tables."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    history: pd.DataFrame
    boundary: int | None
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    images: dict[str, Any]


def load_classifier_data(tracking_uri: str) -> ClassifierData | None:
    """None when no classifier run has completed yet."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("classifier")
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`sweep.role` = 'classifier' and tags.`sweep.state` = 'complete'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    run_id = run.info.run_id
    rows = [
        {"epoch": m.step, "metric": key, "value": m.value}
        for key in ("loss", "val_loss", "accuracy", "val_accuracy")
        for m in client.get_metric_history(run_id, key)
    ]
    phase_one = [m.step for m in client.get_metric_history(run_id, "phase") if m.value == 1]
    boundary = max(phase_one) if phase_one else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(client.download_artifacts(run_id, "evaluation", tmp))
        per_class = pd.read_csv(folder / "per_class.csv")
        confusion = pd.read_csv(folder / "confusion_matrix.csv", index_col=0)
        import matplotlib.image

        images = {
            name: matplotlib.image.imread(folder / f"{name}.png")
            for name in ("correct", "incorrect")
            if (folder / f"{name}.png").is_file()
        }
    return ClassifierData(
        run_id=run_id,
        params=dict(run.data.params),
        metrics={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
        history=pd.DataFrame(rows, columns=["epoch", "metric", "value"]),
        boundary=int(boundary) if boundary is not None else None,
        per_class=per_class,
        confusion=confusion,
        images=images,
    )
