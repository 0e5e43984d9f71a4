"""The `sweep` command end to end: real Keras training on a few hundred generated images."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from sweep.cli import main
from sweep.tf_env import default_precision
from tests.conftest import SPACES


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def trial_runs(out: Path, study: str):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    return client, parents, trials


@pytest.mark.slow
def test_run_records_complete_trials_and_nested_mlflow_runs_then_continues(
    tmp_path: Path, tiny_space: Path, idx_args: list[str], capsys
) -> None:
    out = tmp_path / "out"
    assert run_cli("--output", out, "run", tiny_space, *idx_args) == 0
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed and "[3/3] trial" in printed

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert sorted(t.params["filters"] for t in complete) == ["[2, 4]", "[4, 8]", "[8, 8]"]

    client, parents, trials = trial_runs(out, "tiny")
    assert len(parents) == 1 and len(trials) == 3
    parent_id = parents[0].info.run_id
    assert parents[0].data.metrics["best_val_loss"] == pytest.approx(study.best_value)
    for run in trials:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["sweep.state"] == "complete" and run.info.status == "FINISHED"
        assert params["profile"] == "quick" and params["epochs"] == "2"
        assert params["train_images"] == "240" and params["val_images"] == "60"
        assert params["precision"] == default_precision()  # "auto" settled and recorded
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
        assert metrics["best_val_loss"] == pytest.approx(min(m.value for m in history))
        assert metrics["param_count"] > 0 and metrics["train_seconds"] > 0
        assert metrics["peak_rss_mib"] > 100  # the trial's own process: Keras and a model
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model.keras", "model_summary.txt", "architecture.json"} <= artifacts
        trial = study.trials[int(tags["optuna.trial_number"])]
        assert trial.value == pytest.approx(metrics["best_val_loss"])
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id

    assert run_cli("--output", out, "run", tiny_space, *idx_args) == 0
    assert "3 of 3 trials done, 0 to run" in capsys.readouterr().out
    assert (
        len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}").trials)
        == 3
    )
    assert len(trial_runs(out, "tiny")[2]) == 3

    assert run_cli("--output", out, "studies") == 0
    listing = capsys.readouterr().out
    assert "tiny" in listing and f"{study.best_value:.5f}" in listing


@pytest.mark.slow
def test_a_trial_whose_loss_turns_nan_fails_and_the_study_goes_on(
    tmp_path: Path, tiny_space: Path, idx_args: list[str], monkeypatch, capsys
) -> None:
    import models.autoencoder as autoencoder
    from sweep.tf_env import import_keras_quietly

    keras = import_keras_quietly()
    real_build = autoencoder.build_autoencoder

    def build_with_nan_loss_for_8_8(config, input_shape=(28, 28, 1), **options):
        model = real_build(config, input_shape, **options)
        if config.filters == (8, 8):
            model.compile(
                optimizer="adam",
                loss=lambda y, p: keras.ops.mean(keras.ops.square(y - p)) * float("nan"),
            )
        return model

    monkeypatch.setattr(autoencoder, "build_autoencoder", build_with_nan_loss_for_8_8)
    out = tmp_path / "out"
    assert run_cli("--output", out, "run", tiny_space, "--in-process", *idx_args) == 0
    assert "failed: loss became nan at epoch 1" in capsys.readouterr().out

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.params["filters"]: t.state.name for t in study.trials}
    assert states == {"[2, 4]": "COMPLETE", "[4, 8]": "COMPLETE", "[8, 8]": "FAIL"}
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.user_attrs["fail_reason"] == "loss became nan at epoch 1"

    _, _, trials = trial_runs(out, "tiny")
    failed_run = next(r for r in trials if r.data.params["filters"] == "[8, 8]")
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["sweep.state"] == "failed"
    assert "nan" in failed_run.data.tags["sweep.fail_reason"]


@pytest.mark.slow
def test_show_prints_the_summary_and_total_parameters(capsys) -> None:
    assert run_cli("show", SPACES / "filters.yaml", "--set", "filters=[8,16,32]") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "Total parameters: 21,441"
    assert any("enc_s1_conv1" in line for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope.yaml"], "nope.yaml: file not found"),
        (["run", SPACES / "filters.yaml", "--profile", "huge"], "unknown profile 'huge'"),
        (["run", SPACES / "filters.yaml", "--set", "pool_blocks=4"], "pool_blocks <= 3"),
        (["run", SPACES / "filters.yaml", "--n-trials", "0"], "--n-trials must be at least 1"),
        (
            ["show", SPACES / "filters.yaml", "--set", "kernel_size=0"],
            "kernel_size must be a positive",
        ),
        (
            ["studies", "--storage", "postgresql://bob:hunter2@127.0.0.1:1/x"],
            "cannot open Optuna storage",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, args, message, capsys) -> None:
    assert run_cli("--output", tmp_path, *args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1
    assert "hunter2" not in captured.err + captured.out


def test_studies_on_an_empty_store_says_how_to_start(tmp_path: Path, capsys) -> None:
    assert run_cli("--output", tmp_path, "studies") == 0
    assert "make sweep-filters" in capsys.readouterr().out


def test_free_port_skips_a_busy_one() -> None:
    import socket

    from sweep.browse import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert free_port("127.0.0.1", port) != port


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_leaves_both_stores_consistent(
    tmp_path: Path, tiny_space: Path, idx_args: list[str]
) -> None:
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    cli = [sys.executable, "-m", "sweep", "--output", str(out)]
    # One trial at a time (two at once: tests/test_slots_e2e.py)
    command = [*cli, "run", str(tiny_space), "--jobs", "1", "--set", "epochs=50", *idx_args]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in worker.stdout:
        if "epoch   2/50" in line:
            break
    worker.send_signal(signal.SIGINT)
    rest = worker.communicate(timeout=60)[0]
    assert worker.returncode == 130
    assert "interrupted: finished trials are kept" in rest

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"]
    client, parents, trials = trial_runs(out, "tiny")
    assert [r.info.status for r in trials] == ["KILLED"]
    assert trials[0].data.tags["sweep.state"] == "failed"
    assert trials[0].data.tags["sweep.fail_reason"] == "interrupted (Ctrl-C)"
    assert [r.info.status for r in parents] == ["KILLED"]


def test_commands_that_train_nothing_import_no_tensorflow(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sweep.cli import main\n"
        f"main(['--output', {str(tmp_path)!r}, 'studies'])\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'optuna') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "heavy: []" in done.stdout, done.stdout + done.stderr
