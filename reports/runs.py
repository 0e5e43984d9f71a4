"""Read the MLflow tracking store into DataFrames: each study's trial runs (curves and
architecture tables) and the latest classifier run. A store that does not exist yet is read
as empty, never created."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports.frames import frame
from reports.stores import store_missing
from sweep.errors import SweepError
from sweep.points import RECONSTRUCTIONS
from sweep.storage import first_line, mask_url

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("mlflow").setLevel(logging.WARNING)

CURVE_COLUMNS = {"trial": "int64", "metric": "str", "epoch": "int64", "value": "float64"}
ARCHITECTURE_COLUMNS = {"layer": "str", "type": "str", "output_shape": "str", "params": "float64"}
ARCHITECTURE_KEYS = ("filters", "pool_blocks", "kernel_size")
HISTORY_COLUMNS = {"epoch": "int64", "metric": "str", "value": "float64"}
PER_CLASS_COLUMNS = {
    "class": "str",
    "precision": "float64",
    "recall": "float64",
    "f1": "float64",
    "support": "float64",
}


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


@dataclass(frozen=True)
class Tracked:
    """What MLflow holds about one study's trials (empty where it holds nothing yet)."""

    curves: pd.DataFrame = field(default_factory=lambda: frame([], CURVE_COLUMNS))
    architectures: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    reconstructions: dict[int, Any] = field(default_factory=dict)


def study_runs(tracking_uri: str, name: str, trials: pd.DataFrame) -> Tracked:
    """The MLflow runs of study `name`'s `trials` (matched by the run id each trial recorded),
    their loss curves and architecture tables, and the sweep's run parameters."""
    client = tracking_client(tracking_uri)
    if client is None:
        return Tracked()
    from sweep.tracking import ROLE_TAG

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
        pictures = {
            n: p for n, r in mine.items() if (p := _picture(client, r.info.run_id)) is not None
        }
    parent = next((r for r in runs if r.data.tags.get(ROLE_TAG) == "study"), None)
    run_params = dict(parent.data.params) if parent else {}
    for run in mine.values():
        run_params = run_params or {
            k: v for k, v in run.data.params.items() if k in ("profile", "dataset")
        }
    curves = frame(rows, CURVE_COLUMNS)
    curves = curves.sort_values(["trial", "metric", "epoch"]).drop_duplicates(
        ["trial", "metric", "epoch"], keep="last"
    )
    runs_by_id = {r.info.run_id: r for r in mine.values()}
    return Tracked(curves, architectures, run_params, runs_by_id, pictures)


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    """Every run of the experiment: search_runs answers one page at a time."""
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
        key = "  ".join(f"{k}={run.data.params.get(k)}" for k in ARCHITECTURE_KEYS)
        if key not in tables:
            table = _architecture(client, run.info.run_id)
            if table is not None:
                tables[key] = table
    return tables


def _architecture(client: Any, run_id: str) -> pd.DataFrame | None:
    """The run's layer table, or None if it has none (a trial that stopped before logging it)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _download(client, run_id, "architecture.json", Path(tmp))
            rows = json.loads(path.read_text()) if path else None
        except (OSError, ValueError):
            return None
    if not isinstance(rows, list):
        return None
    return frame((r for r in rows if isinstance(r, dict)), ARCHITECTURE_COLUMNS)


def _picture(client: Any, run_id: str) -> Any:
    """The trial's validation images above their reconstructions (an RGBA array), or None
    where the run has none (it failed, or it predates them)."""
    from matplotlib.image import imread

    with tempfile.TemporaryDirectory() as tmp:
        path = _download(client, run_id, RECONSTRUCTIONS, Path(tmp))
        try:
            return imread(path) if path else None
        except (OSError, ValueError, SyntaxError):  # not a PNG: a damaged or foreign artifact
            return None


def _download(client: Any, run_id: str, artifact: str, folder: Path) -> Path | None:
    """The run's `artifact` downloaded into `folder`, or None where the run lacks it."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, artifact, str(folder)))
    except (MlflowException, OSError):
        return None


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
    from sweep.tracking import ROLE_TAG, STATE_TAG

    with reading_mlflow(tracking_uri):
        experiment = client.get_experiment_by_name("classifier")
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'classifier' and tags.`{STATE_TAG}` = 'complete'",
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
    folder = _download(client, run_id, "evaluation", tmp) or tmp / "none"
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
    """The table in `path`, or an empty one where it is missing or unreadable."""
    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError):
        return pd.DataFrame()
