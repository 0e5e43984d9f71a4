"""Read the Optuna storage and the MLflow store into pandas DataFrames. Nothing here trains,
and a store that does not exist yet is read as empty, never created."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from sweep.errors import SweepError
from sweep.points import is_listed
from sweep.storage import first_line, mask_url, open_storage

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("mlflow").setLevel(logging.WARNING)
optuna.logging.set_verbosity(optuna.logging.ERROR)

PACKAGES = ("tensorflow", "keras", "optuna", "mlflow", "pandas", "seaborn")
STATES = ("complete", "running", "waiting", "pruned", "failed")
TRIAL_COLUMNS = {
    "number": "int64",
    "state": "str",
    "value": "float64",
    "train_seconds": "float64",
    "param_count": "float64",
    "best_epoch": "float64",
    "run_id": "str",
    "fail_reason": "str",
}
CURVE_COLUMNS = {"trial": "int64", "metric": "str", "epoch": "int64", "value": "float64"}
INTERMEDIATE_COLUMNS = {"trial": "int64", "epoch": "int64", "value": "float64", "state": "str"}
ARCHITECTURE_COLUMNS = {"layer": "str", "type": "str", "output_shape": "str", "params": "float64"}
HISTORY_COLUMNS = {"epoch": "int64", "metric": "str", "value": "float64"}
PER_CLASS_COLUMNS = {
    "class": "str",
    "precision": "float64",
    "recall": "float64",
    "f1": "float64",
    "support": "float64",
}


def frame(rows: Iterable[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """`rows` as a DataFrame with exactly `columns` (name -> dtype), NaN where a row lacks a
    value or holds one of another type. Every frame of store data is built here, so no figure
    or table meets a missing column."""
    table = pd.DataFrame(list(rows), columns=list(columns))
    return table.assign(**{name: _typed(table[name], dtype) for name, dtype in columns.items()})


def _typed(column: pd.Series, dtype: str) -> pd.Series:
    """`column` as `dtype`; 'infer' keeps the type its values share (a parameter's)."""
    if dtype == "infer":
        return column.infer_objects()
    if dtype == "float64":
        return pd.to_numeric(column, errors="coerce").astype(dtype)
    return column.astype(dtype)


def store_missing(url: str) -> bool:
    """True when `url` names a local store (SQLite file, MLflow folder) that does not exist:
    opening it would create it, and there is nothing in it to read."""
    path = _local_path(url)
    return path is not None and not path.exists()


def _local_path(url: str) -> Path | None:
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        try:
            database = make_url(url).database
        except Exception:  # noqa: BLE001 - a malformed URL; opening it reports it
            return None
        plain = database and database != ":memory:" and not database.startswith("file:")
        return Path(database) if plain else None
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    local = is_local_uri(url, is_tracking_or_registry_uri=True)
    return Path(local_file_uri_to_path(url)) if local else None


def _open(storage_url: str) -> optuna.storages.RDBStorage:
    """The storage, or a one-line error when there is none yet (without creating one)."""
    if store_missing(storage_url):
        raise no_studies(storage_url)
    return open_storage(storage_url)


def no_studies(storage_url: str) -> SweepError:
    return SweepError(
        f"no studies in {mask_url(storage_url)} yet; run a sweep first (make sweep-filters)"
    )


@dataclass
class StudyData:
    """Everything the report shows about one study, as DataFrames built by `frame`.

    `trials`: one row per trial (TRIAL_COLUMNS, then one column per parameter any trial has).
    `curves`: long format (trial, metric, epoch, value) from MLflow. `intermediate`: the
    val_loss Optuna saw per epoch (for pruning). `runs`: the MLflow run of each trial, by id.
    """

    name: str
    params: list[str]
    value_order: dict[str, list[Any]]
    trials: pd.DataFrame
    curves: pd.DataFrame
    intermediate: pd.DataFrame
    architectures: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    study: optuna.Study | None = None
    kind: str = "autoencoder"
    metric: str = "val_loss"
    maximize: bool = False
    outside: int = 0  # trials of points the space no longer lists: kept, not shown

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == "complete"]

    @property
    def is_one_factor(self) -> bool:
        return len(self.params) == 1

    @property
    def note(self) -> str:
        """Why the study has nothing to compare yet, e.g. 'no finished trial yet (1 running)';
        empty once a trial has completed."""
        if self.trials.empty:
            return "no trials yet"
        if self.complete["value"].notna().any():
            return ""
        counts = self.trials["state"].value_counts()
        detail = ", ".join(f"{counts[s]} {s}" for s in _ordered(counts.index))
        busy = set(counts.index) <= {"running", "waiting"}
        return f"no {'finished' if busy else 'complete'} trial yet ({detail})"


def _ordered(states: Iterable[str]) -> list[str]:
    seen = set(states)
    return [s for s in STATES if s in seen] + sorted(seen - set(STATES))


def study_names(storage_url: str) -> list[str]:
    return sorted(optuna.get_all_study_names(_open(storage_url)))


def load_study_data(storage_url: str, tracking_uri: str, name: str) -> StudyData:
    """One study's trials from Optuna, and its curves and architectures from MLflow."""
    storage = _open(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(sorted(optuna.get_all_study_names(storage))) or "none"
        raise SweepError(
            f"no study {name!r} in {mask_url(storage_url)} (studies: {known}); "
            "run its sweep first, e.g. make sweep-filters"
        ) from None
    every = study.get_trials(deepcopy=False)
    frozen = [t for t in every if _listed(t, study.user_attrs.get("space"))]
    params, order = _param_order(frozen)
    trials = frame(
        (_trial_row(t, params) for t in frozen),
        {**TRIAL_COLUMNS, **dict.fromkeys(params, "infer")},
    )
    intermediate = frame(
        (
            {"trial": t.number, "epoch": step, "value": value, "state": _state(t)}
            for t in frozen
            for step, value in sorted(t.intermediate_values.items())
        ),
        INTERMEDIATE_COLUMNS,
    )
    tracked = _from_mlflow(tracking_uri, name, trials)
    return StudyData(
        name=name,
        params=params,
        value_order=order,
        trials=trials,
        curves=tracked.curves,
        intermediate=intermediate,
        architectures=tracked.architectures,
        run_params=tracked.run_params,
        runs=tracked.runs,
        study=study,
        kind=str(study.user_attrs.get("kind", "autoencoder")),
        metric=str(study.user_attrs.get("metric", "val_loss")),
        maximize=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE,
        outside=len(every) - len(frozen),
    )


def _listed(trial: optuna.trial.FrozenTrial, space: dict[str, Any] | None) -> bool:
    """Whether the trial's point is one the space listed at the study's latest run (`sweep run`
    records SearchSpace.listed() as the study's `space` attribute); every trial is, in a study
    recorded before that, and so is one whose params are not set yet."""
    return not space or not trial.params or is_listed(trial.params, space)


def _param_order(trials: list[optuna.trial.FrozenTrial]) -> tuple[list[str], dict[str, list]]:
    """Parameter names in first-seen order (an edited space adds or drops some); categorical
    values in the order the space lists."""
    params: dict[str, list] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if name not in params:
                params[name] = (
                    list(dist.choices) if isinstance(dist, CategoricalDistribution) else []
                )
    return list(params), params


def _state(trial: optuna.trial.FrozenTrial) -> str:
    return {"fail": "failed"}.get(trial.state.name.lower(), trial.state.name.lower())


def _trial_row(trial: optuna.trial.FrozenTrial, params: list[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": _state(trial),
        "value": trial.values[0] if trial.values else None,
        "train_seconds": attrs.get("train_seconds"),
        "param_count": attrs.get("param_count"),
        "best_epoch": attrs.get("best_epoch"),
        "run_id": attrs.get("mlflow_run_id"),
        "fail_reason": attrs.get("fail_reason"),
        **{name: trial.params.get(name) for name in params},
    }


@dataclass(frozen=True)
class Tracked:
    """What MLflow holds about one study's trials (empty where it holds nothing yet)."""

    curves: pd.DataFrame = field(default_factory=lambda: frame([], CURVE_COLUMNS))
    architectures: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)


def tracking_client(tracking_uri: str) -> Any | None:
    """An MlflowClient, or None when the tracking store does not exist yet (so reading it
    does not create it). A server is probed first: one that is down fails in seconds."""
    if store_missing(tracking_uri):
        return None
    from sweep.tracking import Tracker, is_server

    tracker = Tracker(tracking_uri)  # refuses a store of the other tool, or a half-migrated one
    if is_server(tracking_uri):
        tracker.check()
    return tracker.client


@contextmanager
def reading_mlflow(tracking_uri: str) -> Iterator[None]:
    """Turn a tracking store that cannot be read (down, wrong URL, old schema) into one line."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise SweepError(
            f"cannot read MLflow at {mask_url(tracking_uri)}: {first_line(exc)}; "
            "check --tracking-uri"
        ) from None


def _from_mlflow(tracking_uri: str, name: str, trials: pd.DataFrame) -> Tracked:
    client = tracking_client(tracking_uri)
    if client is None:
        return Tracked()
    with reading_mlflow(tracking_uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return Tracked()
        runs = _all_runs(client, experiment.experiment_id)
        by_run = {r.info.run_id: r for r in runs}
        mine = {
            number: by_run[run_id]
            for number, run_id in zip(trials["number"], trials["run_id"], strict=True)
            if isinstance(run_id, str) and run_id in by_run
        }
        rows = [
            {"trial": number, "metric": metric, "epoch": m.step, "value": m.value}
            for number, run in mine.items()
            for metric in ("loss", "val_loss")
            for m in client.get_metric_history(run.info.run_id, metric)
        ]
        architectures = _architectures(client, mine.values())
    parent = next((r for r in runs if r.data.tags.get("sweep.role") == "study"), None)
    run_params = dict(parent.data.params) if parent else {}
    for run in mine.values():
        run_params = run_params or {
            k: v for k, v in run.data.params.items() if k in ("profile", "dataset")
        }
    curves = frame(rows, CURVE_COLUMNS)
    curves = curves.sort_values(["trial", "metric", "epoch"]).drop_duplicates(
        ["trial", "metric", "epoch"], keep="last"
    )
    return Tracked(curves, architectures, run_params, {r.info.run_id: r for r in mine.values()})


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _architectures(client: Any, runs: Iterable[Any]) -> dict[str, pd.DataFrame]:
    """One architecture table per distinct (filters, pool_blocks, kernel_size)."""
    tables: dict[str, pd.DataFrame] = {}
    for run in runs:
        key = _architecture_key(run.data.params)
        if key not in tables:
            table = _architecture(client, run.info.run_id)
            if table is not None:
                tables[key] = table
    return tables


def _architecture_key(params: dict[str, str]) -> str:
    return "  ".join(f"{k}={params.get(k)}" for k in ("filters", "pool_blocks", "kernel_size"))


def _architecture(client: Any, run_id: str) -> pd.DataFrame | None:
    """The run's layer table, or None if it has none (a trial that stopped before logging it)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "architecture.json", tmp)
            rows = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError):
            return None
    if not isinstance(rows, list):
        return None
    return frame((r for r in rows if isinstance(r, dict)), ARCHITECTURE_COLUMNS)


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
    client = tracking_client(tracking_uri)
    if client is None:
        return None
    with reading_mlflow(tracking_uri):
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
        with tempfile.TemporaryDirectory() as tmp:
            per_class, confusion, images = _evaluation(client, run_id, Path(tmp))
    return ClassifierData(
        run_id=run_id,
        params=dict(run.data.params),
        metrics={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
        history=frame(rows, HISTORY_COLUMNS),
        boundary=int(max(phase_one)) if phase_one else None,
        per_class=per_class,
        confusion=confusion,
        images=images,
    )


def _evaluation(
    client: Any, run_id: str, tmp: Path
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The run's per-class table, confusion matrix (counts) and sample images; empty where
    the run lacks them."""
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(client.download_artifacts(run_id, "evaluation", str(tmp)))
    except (MlflowException, OSError):
        folder = tmp / "none"
    per_class = frame(_read_csv(folder / "per_class.csv").to_dict("records"), PER_CLASS_COLUMNS)
    confusion = _read_csv(folder / "confusion_matrix.csv", index_col=0)
    confusion = confusion.apply(pd.to_numeric, errors="coerce").fillna(0).astype("int64")
    import matplotlib.image

    images = {
        name: matplotlib.image.imread(folder / f"{name}.png")
        for name in ("correct", "incorrect")
        if (folder / f"{name}.png").is_file()
    }
    return per_class, confusion, images


def _read_csv(path: Path, **options: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError):
        return pd.DataFrame()
