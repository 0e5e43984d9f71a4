"""MLflow: one experiment and one parent run per study, one nested run per trial."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from sweep.errors import SweepError
from sweep.storage import (
    MLFLOW,
    add_url_secret,
    connect,
    default_url,
    first_line,
    first_open,
    is_server,
    mask_url,
    redact,
    shown,
    store_errors,
)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A tracking server makes MLflow print two links per finished run; the progress lines say
# which trial ended, and `sweep ui` / the server's address open them.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

ROLE_TAG = "sweep.role"
STATE_TAG = "sweep.state"
TRIAL_TAG = "optuna.trial_number"
STUDY_TAG = "optuna.study_name"
PARENT_TAG = "mlflow.parentRunId"
BEST_TAG = "sweep.best"
STATES = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def default_tracking_uri(output: Path) -> str:
    return default_url(output, MLFLOW)


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_client(uri: str) -> MlflowClient:
    """An MlflowClient on `uri`, after refusing a URI this project cannot use and a database
    that is not a sound MLflow store; a new SQLite store is created under its init lock."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    scheme = scheme.group(1).lower().split("+")[0] if scheme else None
    if scheme not in SERVER_SCHEMES + DATABASE_SCHEMES:
        raise SweepError(
            f"--tracking-uri {shown(uri)} is not an MLflow tracking URI; "
            "use sqlite:///PATH or http(s)://HOST:PORT"
        )
    if scheme in SERVER_SCHEMES:
        return _client(uri)
    with first_open(uri, MLFLOW) as tables:
        if tables:
            check_schema(uri, tables)
        return _client(uri)


def _client(uri: str) -> MlflowClient:
    from urllib.parse import urlsplit

    add_url_secret(uri)
    if is_server(uri) and not urlsplit(uri).hostname:
        raise SweepError(f"--tracking-uri {shown(uri)} names no host; use http(s)://HOST:PORT")
    with store_errors(uri, MLFLOW):
        return MlflowClient(tracking_uri=uri)


def check_schema(uri: str, tables: frozenset[str]) -> None:
    """Refuse an MLflow store that is half-migrated (a migration killed, or raced by two first
    runs): MLflow would fail on it, or migrate it further into a broken state."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(""))
    head = script.get_current_head()
    version = _schema_version(uri) if "alembic_version" in tables else None
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if version == head and not leftovers:
        return
    known = {r.revision for r in script.walk_revisions()}
    raise SweepError(
        f"--tracking-uri {mask_url(uri)} {_recovery(uri, version, head, known, leftovers)}"
    )


def _recovery(
    uri: str, version: str | None, head: str, known: set[str], leftovers: list[str]
) -> str:
    """What is wrong with a half-migrated store, and the commands that recover it (tried on
    stores left by racing first runs, and in tests/test_hostile_stores.py)."""
    import mlflow

    path = uri.split(":///", 1)[1] if uri.startswith("sqlite:///") else None
    where = path or "the database"
    if version is not None and version not in known:
        return (
            f"has MLflow schema {version}, unknown to MLflow {mlflow.__version__} (a newer one "
            f"made it?); upgrade mlflow, or move {where} aside to start a new store"
        )
    found = [f"schema {version or 'unversioned'}, not {head}"] if version != head else []
    drop = ""
    if leftovers:
        found.append(f"leftover table{'s' * (len(leftovers) > 1)} {', '.join(leftovers)}")
        sql = "; ".join(f"DROP TABLE {t}" for t in leftovers)
        drop = f"run: sqlite3 {path} '{sql}', then " if path else f"{sql}, then "
    return (
        f"is a half-migrated MLflow store ({'; '.join(found)}: a migration was interrupted, or "
        f"an older MLflow made it); back up {where}, {drop}run: mlflow db upgrade "
        f"{mask_url(uri)}; if that fails, move {where} aside to start a new store"
    )


def _schema_version(uri: str) -> str | None:
    with store_errors(uri, MLFLOW), connect(uri) as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


class Tracker:
    """Writes one study's runs to an MLflow tracking store (SQLite file or server)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        self.uri = tracking_uri
        # A tracking server stores artifacts where it was told to (shared by every worker).
        self.artifact_root = None if is_server(tracking_uri) else artifact_root
        self.client = open_client(tracking_uri)

    def check(self) -> None:
        """Fail fast, before any training, when the tracking store cannot be reached."""
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        saved = {key: os.environ.get(key) for key in quick}
        os.environ.update(quick)
        try:
            with store_errors(self.uri, MLFLOW):
                self.client.search_experiments(max_results=1)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def experiment_id(self, name: str) -> str:
        """Get or create the study's experiment (creation races end in the same id)."""
        try:
            existing = self.client.get_experiment_by_name(name)
            if existing is not None:
                if existing.lifecycle_stage == "deleted":
                    self.client.restore_experiment(existing.experiment_id)
                return existing.experiment_id
            location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            # The kind tag makes the MLflow UI open the experiment as model training, not GenAI.
            return self.client.create_experiment(
                name,
                artifact_location=location,
                tags={"mlflow.experimentKind": "custom_model_development"},
            )
        except MlflowException as exc:
            if "already exists" in str(exc).lower():
                return self.client.get_experiment_by_name(name).experiment_id
            raise SweepError(f"MLflow at {mask_url(self.uri)}: {first_line(exc)}") from None

    def study_run(self, study_name: str, params: dict[str, Any]) -> str:
        """The study's parent run: the existing one (reopened) or a new one."""
        experiment_id = self.experiment_id(study_name)
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            experiment_id,
            run_name=study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: study_name},
        )
        self.client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags on a run (they replace the same tags set before, unlike params)."""
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def end_study_run(self, run_id: str, summary: dict[str, Any], status: str = "FINISHED") -> None:
        """Record the study's best trial on the parent run, tag that trial's run, close both."""
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
        tags = {k: str(v) for k, v in summary.items() if not isinstance(v, (int, float))}
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if summary.get("best_run_id"):
            self.mark_best(run_id, str(summary["best_run_id"]))
        self.client.set_terminated(run_id, status)

    def mark_best(self, parent_run_id: str, best_run_id: str) -> None:
        """Tag the best trial's run `sweep.best=true`, and take the tag off an earlier best,
        so the runs table (or the search `tags.sweep.best = 'true'`) shows which one won."""
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        earlier = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{BEST_TAG}` = 'true' and tags.`{PARENT_TAG}` = '{parent_run_id}'",
        )
        for run in earlier:
            if run.info.run_id != best_run_id:
                self.client.delete_tag(run.info.run_id, BEST_TAG)
        self.client.set_tag(best_run_id, BEST_TAG, "true")

    def end_lost_run(self, run_id: str, reason: str) -> None:
        """End the run of a trial whose worker died (no heartbeat): KILLED, with the reason."""
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return
            TrialRun(self.client, run_id).finish("failed", reason=reason, status="KILLED")
        except MlflowException:
            pass  # the run was never created, or the tracking server lost it: nothing to end

    def run(
        self, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> AbstractContextManager[TrialRun]:
        """A top-level run (e.g. one classifier training); ends FAILED if the body raises."""
        return self._open_run(self.experiment_id(experiment), run_name, params, tags)

    def trial_run(
        self, parent_run_id: str, study_name: str, trial_number: int, params: dict[str, Any]
    ) -> AbstractContextManager[TrialRun]:
        """A nested run for one trial; ends FAILED (with the reason) if the body raises."""
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        tags = {
            PARENT_TAG: parent_run_id,
            ROLE_TAG: "trial",
            STUDY_TAG: study_name,
            TRIAL_TAG: str(trial_number),
        }
        return self._open_run(experiment_id, f"trial-{trial_number}", params, tags)

    @contextmanager
    def _open_run(
        self, experiment_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> Iterator[TrialRun]:
        """Create a run; on exit end it complete, or failed (KILLED on Ctrl-C) with the reason,
        unless the body already ended it (e.g. as pruned)."""
        run = self.client.create_run(
            experiment_id, run_name=run_name, tags={**tags, STATE_TAG: "running"}
        )
        handle = TrialRun(self.client, run.info.run_id)
        try:
            self.client.log_batch(handle.run_id, params=_params(params))
            yield handle
        except KeyboardInterrupt as exc:
            if handle.state == "running":
                from sweep.signals import stop_reason

                handle.finish("failed", reason=stop_reason(exc), status="KILLED")
            raise
        except BaseException as exc:
            if handle.state == "running":
                handle.finish("failed", reason=_reason(exc))
            raise
        if handle.state == "running":
            handle.finish("complete")


class TrialRun:
    """What a trial logs: per-epoch metrics, results, artifacts, and its final state."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id, self.state = client, run_id, "running"

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        now = _now_ms()
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        )

    def log_params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=_params(params))

    def log_results(self, metrics: dict[str, float]) -> None:
        self.log_epoch(0, metrics)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: Any, name: str) -> None:
        self.client.log_dict(self.run_id, data, name)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_model(self, model: Any, name: str = "model.keras") -> None:
        """Store a Keras model (or a saved model's file) as an artifact."""
        if isinstance(model, str | Path):
            self.client.log_artifact(self.run_id, str(model))
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            model.save(path)
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, state: str, reason: str | None = None, status: str | None = None) -> None:
        tags = [RunTag(STATE_TAG, state)]
        if reason:
            tags.append(RunTag("sweep.fail_reason", reason[:5000]))
        self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, status or STATES[state])
        self.state = state


def _reason(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:6000]) for k, v in values.items() if v is not None]
