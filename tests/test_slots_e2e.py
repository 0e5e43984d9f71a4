"""Slots with real trial processes: each trial confined to its threads (and GPU), recorded in
both stores, and Ctrl-C or SIGTERM with two trials running ends both, records both as
stopped, and a rerun continues."""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.tf_env import confine
from sweep.worker import call_in_process
from tests.conftest import idx_options, write_dataset
from tests.test_signals import Command, descendants, gone_within, stopped_trials, trial_processes


def environment_and_threads(report, names: tuple[str, ...]) -> tuple[dict, dict]:
    """A trial target: the environment it sees and its backend's thread pools."""
    from sweep.tf_env import runtime_settings

    return {n: os.environ.get(n) for n in names}, runtime_settings()


def test_a_trial_process_is_confined_to_its_threads_and_gpu_and_the_sweep_is_not() -> None:
    names = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    before = {n: os.environ.get(n) for n in names}
    (seen, threads), _ = call_in_process(
        environment_and_threads, names, prepare=partial(confine, 1, "3")
    )
    assert seen == {"CUDA_VISIBLE_DEVICES": "3", "OMP_NUM_THREADS": "1"}
    onednn = int(os.environ["TF_ENABLE_ONEDNN_OPTS"] != "0")  # sweep.tf_env: on unless set
    assert threads == {"intra_op_threads": 1, "inter_op_threads": 1, "onednn": onednn}
    (seen, threads), _ = call_in_process(environment_and_threads, names)
    assert threads["intra_op_threads"] == 0  # unconfined: the library's default
    assert {n: os.environ.get(n) for n in names} == before


def two_point_sweep(tmp_path: Path, epochs: int) -> list[str]:
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "study: tiny\n"
        "base: {filters: [2, 4], pool_blocks: 2, kernel_size: 3, batch_size: 64,"
        f" epochs: {epochs}, patience: {epochs}}}\n"
        "params:\n  filters:\n    values: [[2, 4], [4, 8]]\n"
    )
    files = write_dataset(tmp_path / "idx")
    cli = [sys.executable, "-m", "sweep.cli", "--output", str(tmp_path / "out")]
    return [
        *cli,
        "run",
        str(space),
        "--heartbeat",
        "0",
        "--jobs",
        "2",
        "--threads",
        "1",
        *idx_options(files),
    ]


@pytest.mark.slow
def test_two_slots_train_two_confined_trials_at_once_and_record_how(tmp_path: Path) -> None:
    sweep = Command(two_point_sweep(tmp_path, epochs=2))
    printed = sweep.rest(timeout=300)
    assert sweep.process.returncode == 0, printed
    assert "Slots: 2 trials at a time, 1 thread each (--jobs 2)" in printed
    assert "(2 running)" in printed
    assert "[t0] epoch   2/2" in printed and "[t1] epoch   2/2" in printed
    out = tmp_path / "out"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # what the trial's own process ran with, read back from TensorFlow there
    assert {t.user_attrs["intra_op_threads"] for t in study.trials} == {1}
    assert {t.user_attrs["worker"].rsplit("/", 1)[1] for t in study.trials} == {"0", "1"}
    # the bigger point started first
    assert study.trials[0].params["filters"] == "[4, 8]"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert [
        (r.data.params["jobs"], r.data.params["threads"], r.data.params["device"]) for r in trials
    ] == [("2", "1", "cpu")] * 2
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "study")
    assert (
        parent.data.tags["sweep.jobs"] == "2" and parent.data.tags["sweep.threads_per_trial"] == "1"
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_with_two_trials_running_ends_and_records_both_and_a_rerun_continues(
    tmp_path: Path, signum: int
) -> None:
    command = two_point_sweep(tmp_path, epochs=50)
    sweep = Command(command)
    training: set[str] = set()
    while len(training) < 2:  # both trials are past their first epoch
        training.add(sweep.wait_for("[t0] epoch", "[t1] epoch").split()[0])
    below = descendants(sweep.process.pid)
    trials = trial_processes(below, sweep.process.pid)
    assert len(trials) >= 2, f"not two trial processes below the sweep: {below}"
    sweep.process.send_signal(signum)
    printed = sweep.rest()
    assert sweep.process.returncode == 128 + signum, printed
    assert "Traceback" not in printed, printed
    assert not gone_within(trials, 2), "a trial's process outlived the sweep"
    reason = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
    assert stopped_trials(tmp_path / "out") == (
        ["FAIL", "FAIL"],
        [("KILLED", reason), ("KILLED", reason)],
        ["KILLED"],
    )

    rerun = Command(command)  # both points are retried, two at once again
    assert "trial " in rerun.wait_for("(2 running)")
    rerun.process.send_signal(signal.SIGINT)
    rerun.wait_for("interrupted: finished trials are kept", timeout=60)
    assert rerun.process.wait(60) == 130
    assert stopped_trials(tmp_path / "out")[0] == ["FAIL"] * 4


def test_gpu_numbers_count_the_gpus_the_sweep_sees(monkeypatch) -> None:
    """Under a scheduler that narrowed the GPUs (CUDA_VISIBLE_DEVICES=3,5), slot GPU 1 is 5."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr("sweep.tf_env.import_keras_quietly", lambda initialise=False: _NoBackend())
    confine(None, "1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(RuntimeError, match="GPU 2 is not among the 2 this sweep sees"):
        confine(None, "2")


class _NoBackend:
    """A Keras stand-in whose backend is neither TensorFlow, JAX nor torch (nothing to set)."""

    class backend:  # noqa: N801 - mirrors keras.backend
        @staticmethod
        def backend() -> str:
            return "none"
