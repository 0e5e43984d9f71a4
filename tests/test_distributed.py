"""Many workers on one study: a real PostgreSQL server (Optuna storage, MLflow backend) and a
real MLflow tracking server on loopback, started by `sweep.services` for this test session.
Workers are real `sweep run` processes training tiny models."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep import services as services_module
from sweep.errors import SweepError
from sweep.storage import database_url
from tests.conftest import idx_options

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

GRID = [[2, 4], [4, 8], [8, 8], [4, 4]]


@pytest.fixture(scope="session")
def services():
    """PostgreSQL + MLflow server in a throwaway folder (PostgreSQL's `postgres` user must be
    able to enter it, so not under pytest's private tmp folder)."""
    try:
        services_module.pg_bin("initdb")
    except SweepError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the distributed tests: {exc}")
        pytest.skip(f"PostgreSQL cannot be started here: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="sweep-services-"))
    folder.chmod(0o755)
    try:
        running = services_module.start(
            folder, services_module.free_port(), services_module.free_port()
        )
        yield running
    finally:
        services_module.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster(services, tmp_path: Path, idx_files, request):
    """Start workers on a fresh grid study of this test; inspect both stores."""
    return Cluster(services, tmp_path, idx_files, request.node.name[:40])


class Cluster:
    def __init__(self, services, tmp_path: Path, idx_files, study: str) -> None:
        self.services, self.tmp, self.study = services, tmp_path, study
        self.space = tmp_path / "grid.yaml"
        self.space.write_text(
            f"study: {study}\n"
            "base: {filters: [4, 8], pool_blocks: 2, batch_size: 64, epochs: 8}\n"
            f"params:\n  filters:\n    values: {GRID}\n"
        )
        self.data = idx_options(idx_files)
        self.env = {
            **os.environ,
            "PGPASSWORD": services.password_file.read_text().strip(),
            "PYTHONUNBUFFERED": "1",
        }
        self.count = 0

    def worker(self, *extra: str, storage: str | None = None, tracking: str | None = None):
        self.count += 1
        cli = [sys.executable, "-m", "sweep", "--output", str(self.tmp / f"w{self.count}")]
        stores = ["--storage", storage or self.services.storage]
        stores += ["--tracking-uri", tracking or self.services.tracking_uri]
        # One trial at a time per worker, as `make workers` runs them (JOBS=1 by default).
        run = ["run", str(self.space), "--heartbeat", "3", "--jobs", "1"]
        command = [*cli, *run, *stores, *self.data, *extra]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        os.environ["PGPASSWORD"] = self.env["PGPASSWORD"]
        storage = optuna.storages.RDBStorage(database_url(self.services.storage))
        return optuna.load_study(study_name=self.study, storage=storage).trials

    def runs(self):
        client = MlflowClient(self.services.tracking_uri)
        experiment = client.get_experiment_by_name(self.study)
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("sweep.role") == "study"]
        trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
        return parents, trials


def wait_for(process: subprocess.Popen, text: str) -> list[str]:
    """Read the worker's output until a line contains `text`."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"worker ended before printing {text!r}:\n{''.join(lines)}")


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    return process.communicate(timeout=timeout)[0]


def labels(trials) -> list[str]:
    return sorted(t.params["filters"] for t in trials)


def test_three_workers_run_every_grid_point_exactly_once(cluster: Cluster) -> None:
    workers = [cluster.worker() for _ in range(3)]
    outputs = [finish(w) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    trials = cluster.trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(GRID)
    assert labels(trials) == sorted(str(point) for point in GRID)
    parents, runs = cluster.runs()
    assert len(parents) == 1
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [
        t.number for t in trials
    ]
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in runs)
    assert all(":" in t.user_attrs["worker"] for t in trials)  # host:pid of who ran it


def test_a_killed_workers_trial_fails_and_is_retried_by_a_live_worker(cluster: Cluster) -> None:
    doomed = cluster.worker()
    wait_for(doomed, "epoch   2/")
    survivor = cluster.worker()
    doomed.kill()
    doomed.wait()
    output = finish(survivor)
    assert survivor.returncode == 0, output
    trials = cluster.trials()
    (dead,) = [t for t in trials if t.state.name == "FAIL"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert labels(complete) == sorted(str(point) for point in GRID)
    (retry,) = [t for t in complete if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.params == dead.params
    parents, runs = cluster.runs()
    assert len(parents) == 1
    by_id = {r.info.run_id: r for r in runs}
    lost = by_id[dead.user_attrs["mlflow_run_id"]]
    assert lost.info.status == "KILLED"
    assert lost.data.tags["sweep.fail_reason"].startswith("worker lost: no heartbeat")
    assert "RUNNING" not in {r.info.status for r in runs}
    assert len(runs) == len(trials)


def test_ctrl_c_on_a_worker_leaves_both_stores_consistent_and_a_rerun_completes(
    cluster: Cluster,
) -> None:
    worker = cluster.worker()
    wait_for(worker, "epoch   2/")
    worker.send_signal(signal.SIGINT)
    rest = finish(worker, 60)
    assert worker.returncode == 130, rest
    (trial,) = cluster.trials()
    assert trial.state.name == "FAIL"
    parents, runs = cluster.runs()
    assert [r.info.status for r in runs] == ["KILLED"]
    assert runs[0].data.tags["sweep.fail_reason"] == "interrupted (Ctrl-C)"
    assert [r.info.status for r in parents] == ["KILLED"]

    again = cluster.worker()
    output = finish(again)
    assert again.returncode == 0, output
    trials = cluster.trials()
    assert labels([t for t in trials if t.state.name == "COMPLETE"]) == sorted(
        str(point) for point in GRID
    )
    assert len(trials) == len(GRID) + 1
    parents, runs = cluster.runs()
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == len(trials)


def test_a_wrong_password_or_a_closed_port_is_a_one_line_error(cluster: Cluster) -> None:
    bad = cluster.services.storage.replace("sweep@", "sweep:not-the-password@")
    worker = cluster.worker(storage=bad)
    output = finish(worker, 120)
    assert worker.returncode == 2, output
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert "cannot open Optuna storage" in error and "password authentication failed" in error
    assert "not-the-password" not in output and "***" in error

    closed = f"http://127.0.0.1:{services_module.free_port()}"
    started = time.monotonic()
    worker = cluster.worker(tracking=closed)
    output = finish(worker, 120)
    assert worker.returncode == 2, output
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"cannot reach MLflow tracking at {closed}" in error
    assert time.monotonic() - started < 60
    assert "epoch" not in output
