"""`sweep report` on studies a hostile tester left behind: empty, failed, running, pruned,
edited spaces, missing attributes and metrics; and `-o` pointing at folders. The stores are
made through Optuna and MLflow directly, so nothing trains."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from reports.build import build_report
from reports.conclusions import joint_conclusion, one_factor_conclusion
from reports.joint import (
    Objective,
    plot_history,
    plot_intermediate,
    plot_param_scatter,
    plot_pareto,
)
from reports.one_factor import plot_comparison, plot_value_curves
from reports.studies import TRIAL_COLUMNS, load_study_data
from reports.title import summary_table
from sweep.cli import main

KERNEL = {"kernel_size": CategoricalDistribution([3, 5])}
LR = {"learning_rate": FloatDistribution(1e-3, 1e-2, log=True)}
WIDER_LR = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
NOTES = {
    "empty": "no trials yet",
    "failed": "no complete trial yet (2 failed)",
    "running": "no finished trial yet (1 running)",
    "started": "no finished trial yet (1 running)",
    "pruned": "no complete trial yet (2 pruned)",
}


class Stores:
    """An Optuna storage and an MLflow store written the way sweep/study.py and
    sweep/tracking.py write them."""

    def __init__(self, folder: Path, mlflow: bool = True) -> None:
        self.storage = f"sqlite:///{folder / 'optuna.db'}"
        self.tracking = f"sqlite:///{folder / 'mlflow.db'}"
        if mlflow:
            from mlflow import MlflowClient

            self.client = MlflowClient(self.tracking)

    def study(self, name: str, **options) -> optuna.Study:
        study = optuna.create_study(study_name=name, storage=self.storage, **options)
        study.set_user_attr("kind", "autoencoder")
        study.set_user_attr("metric", "val_loss")
        return study

    def parent(self, name: str) -> str:
        experiment = self.client.create_experiment(name)
        tags = {"sweep.role": "study", "optuna.study_name": name}
        run = self.client.create_run(experiment, run_name=name, tags=tags)
        self.client.log_param(run.info.run_id, "profile", "quick")
        return run.info.run_id

    def trial_run(self, parent: str, study: str, trial: optuna.Trial, curve=()) -> str:
        """A trial's nested run with its val_loss and loss per epoch; its id in the trial."""
        experiment = self.client.get_run(parent).info.experiment_id
        tags = {
            "mlflow.parentRunId": parent,
            "sweep.role": "trial",
            "optuna.study_name": study,
            "optuna.trial_number": str(trial.number),
            "sweep.state": "running",
        }
        run_id = self.client.create_run(experiment, f"trial-{trial.number}", tags=tags).info.run_id
        for epoch, value in enumerate(curve, start=1):
            self.client.log_metric(run_id, "val_loss", value, step=epoch)
            self.client.log_metric(run_id, "loss", value * 1.1, step=epoch)
        trial.set_user_attr("mlflow_run_id", run_id)
        return run_id


def complete(study: optuna.Study, dists: dict, value: float, **attrs) -> optuna.Trial:
    trial = study.ask(dists)
    for key, attr in attrs.items():
        trial.set_user_attr(key, attr)
    study.tell(trial, value)
    return trial


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Stores:
    stores = Stores(tmp_path_factory.mktemp("hostile"))
    stores.study("empty")

    failed = stores.study("failed")
    parent = stores.parent("failed")
    for reason in ("ValueError: bad IDX header", "loss became nan at epoch 1"):
        trial = failed.ask(KERNEL)
        stores.trial_run(parent, "failed", trial)
        trial.set_user_attr("fail_reason", reason)
        failed.tell(trial, state=TrialState.FAIL)

    stores.study("running").ask(KERNEL)
    started = stores.study("started")
    stores.trial_run(stores.parent("started"), "started", started.ask(KERNEL))

    pruned = stores.study("pruned")
    parent = stores.parent("pruned")
    for values in ((0.5, 0.4), (0.6,)):
        trial = pruned.ask(KERNEL)
        stores.trial_run(parent, "pruned", trial, values)
        for epoch, value in enumerate(values, start=1):
            trial.report(value, epoch)
        pruned.tell(trial, state=TrialState.PRUNED)

    edited = stores.study("edited")
    parent = stores.parent("edited")
    first = edited.ask(KERNEL)
    stores.trial_run(parent, "edited", first, (0.3, 0.2))
    first.set_user_attr("train_seconds", 2.0)
    first.set_user_attr("param_count", 1200)
    edited.tell(first, 0.2)
    complete(edited, {**KERNEL, **LR}, 0.25)  # a param added
    edited.enqueue_trial({"learning_rate": 0.05})
    trial = edited.ask(WIDER_LR)  # kernel_size dropped; a value outside the first range
    stores.trial_run(parent, "edited", trial)  # a run without metrics
    edited.tell(trial, 0.1)
    complete(edited, WIDER_LR, 0.15, train_seconds="fast", param_count=[1, 2], mlflow_run_id="x")
    edited.ask(WIDER_LR)

    kernel = stores.study("kernel")
    parent = stores.parent("kernel")
    trial = kernel.ask(KERNEL)
    stores.trial_run(parent, "kernel", trial, (0.4, 0.3))
    kernel.tell(trial, 0.3)
    complete(kernel, KERNEL, 0.35, mlflow_run_id="gone")
    trial = kernel.ask(KERNEL)
    trial.set_user_attr("fail_reason", "out of memory")
    kernel.tell(trial, state=TrialState.FAIL)

    two = stores.study("two_objectives", directions=["minimize", "minimize"])
    trial = two.ask(KERNEL)
    two.tell(trial, [0.2, 10.0])
    return stores


def pdf_text(path: Path) -> str | None:
    """The PDF's text, where poppler's pdftotext is installed."""
    if shutil.which("pdftotext") is None:
        return None
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True)
    return " ".join(done.stdout.split())


def test_every_odd_study_gets_its_section_and_a_note(hostile: Stores, tmp_path: Path) -> None:
    report = build_report(hostile.storage, hostile.tracking, tmp_path / "r.pdf")
    assert report.path.read_bytes()[:5] == b"%PDF-" and report.pages > 0
    for name, note in NOTES.items():
        assert report.sections[name] == [f"{name}: {note}"]
    assert report.sections["kernel"][0] == "kernel_size: training curves per value"
    assert any("Pareto" in title for title in report.sections["edited"])
    assert report.sections["two_objectives"][0] == "kernel_size: training curves per value"
    text = pdf_text(report.path)
    if text is not None:
        for note in NOTES.values():
            assert note in text
        assert "ValueError: bad IDX header" in text


def test_the_summary_table_says_why_a_study_has_no_best(hostile: Stores) -> None:
    names = [*NOTES, "edited"]
    data = [load_study_data(hostile.storage, hostile.tracking, name) for name in names]
    table = summary_table(data).set_index("study")
    for name, note in NOTES.items():
        assert table.loc[name, "best configuration"] == note
        assert table.loc[name, "best value"] == "-"
    assert table.loc["running", "running"] == 1 and table.loc["failed", "failed"] == 2
    assert table.loc["edited", "best configuration"] == "learning_rate=5.00e-02"
    assert table.loc["edited", "training time (s)"] == "2"


def test_every_column_is_present_and_typed_whatever_the_trials(hostile: Stores) -> None:
    for name in (*NOTES, "edited", "kernel"):
        study = load_study_data(hostile.storage, hostile.tracking, name)
        assert list(study.trials.columns) == [*TRIAL_COLUMNS, *study.params]
        for column in ("value", "train_seconds", "param_count", "best_epoch"):
            assert study.trials[column].dtype == "float64", (name, column)
        assert list(study.curves.columns) == ["trial", "metric", "epoch", "value"]
        assert list(study.intermediate.columns) == ["trial", "epoch", "value", "state"]
    edited = load_study_data(hostile.storage, hostile.tracking, "edited")
    assert edited.params == ["kernel_size", "learning_rate"]
    assert edited.value_order == {"kernel_size": [3, 5], "learning_rate": []}
    assert edited.trials["train_seconds"].isna().tolist() == [False, True, True, True, True]
    assert edited.trials["param_count"].isna().sum() == 4
    assert set(edited.curves["trial"]) == {0}


def test_figures_draw_a_study_with_nothing_complete(hostile: Stores) -> None:
    study = load_study_data(hostile.storage, hostile.tracking, "started")
    trials, param = study.trials, "kernel_size"
    objective = Objective()
    for fig in (
        plot_value_curves(study.curves, trials, param, study.value_order[param]),
        plot_comparison(study.curves, trials, param, study.value_order[param]),
        plot_history(trials, {}, objective),
        plot_param_scatter(trials, study.params, study.value_order, objective),
        plot_intermediate(study.intermediate, objective),
    ):
        assert fig.axes
    pareto = plot_pareto(trials, objective)
    assert "no complete trials" in [t.get_text() for ax in pareto.axes for t in ax.texts]
    assert one_factor_conclusion(trials, param).startswith("No complete trial yet")
    assert "Not compared: 1 running" in one_factor_conclusion(trials, param)
    assert joint_conclusion(trials, {}) == "No complete trial yet."


def test_every_trial_of_an_edited_space_is_plotted(hostile: Stores) -> None:
    study = load_study_data(hostile.storage, hostile.tracking, "edited")
    objective = Objective()
    fig = plot_param_scatter(study.trials, study.params, study.value_order, objective)
    kernel, rate = (np.asarray(ax.collections[0].get_offsets()) for ax in fig.axes[:2])
    assert np.isfinite(kernel[:, 0]).sum() == 2
    assert sorted(rate[np.isfinite(rate[:, 0]), 1]) == pytest.approx([0.1, 0.15, 0.25])
    assert 0.05 in rate[:, 0]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """An output folder whose Optuna storage has one complete trial and no MLflow store."""
    folder = tmp_path / "store"
    folder.mkdir()
    complete(Stores(folder, mlflow=False).study("kernel"), KERNEL, 0.2, train_seconds=1.0)
    return folder


def run_cli(store: Path, *args: str) -> int:
    return main(["--output", str(store), "report", *args])


def test_o_names_an_existing_folder(small: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    assert run_cli(small, "-o", str(folder)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Wrote {folder / 'report.pdf'} into the folder given to -o (")
    assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (small / "mlflow.db").exists()


def test_o_in_folders_that_do_not_exist_yet(small: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(small, "-o", str(tmp_path / "new" / "r.pdf")) == 0
    assert (tmp_path / "new" / "r.pdf").is_file()
    assert run_cli(small, "-o", f"{tmp_path / 'deeper' / 'still'}{os.sep}") == 0
    assert (tmp_path / "deeper" / "still" / "report.pdf").is_file()
    assert "into the folder given to -o" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("file/r.pdf", "file is a file, not a folder"),
        ("file/deeper/r.pdf", "file is a file, not a folder"),
        ("out", "report.pdf: it is a folder"),
    ],
)
def test_o_that_cannot_be_written_is_one_line(
    small: Path, tmp_path: Path, capsys, target: str, why: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "out" / "report.pdf").mkdir(parents=True)
    assert run_cli(small, "-o", str(tmp_path / target)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the report to ") and err.count("\n") == 1
    assert why in err and "pass -o a writable FILE.pdf or folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_o_in_a_read_only_folder(small: Path, tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run_cli(small, "-o", str(locked / "r.pdf")) == 2
    assert "cannot write the report to" in capsys.readouterr().err


def test_a_failed_report_leaves_no_partial_file(small: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(small, "nosuch", "-o", str(tmp_path / "x.pdf")) == 2
    assert "no study 'nosuch'" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if "x.pdf" in p.name]


def test_an_empty_output_folder_says_so_and_creates_no_store(tmp_path: Path, capsys) -> None:
    assert run_cli(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no studies in ") and " yet; run a sweep first" in err
    assert err.count("\n") == 1
    assert run_cli(tmp_path, "kernel") == 2
    assert "no studies in" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_missing_mlflow_store_is_read_as_empty(small: Path) -> None:
    study = load_study_data(
        f"sqlite:///{small / 'optuna.db'}", f"sqlite:///{small / 'mlflow.db'}", "kernel"
    )
    assert study.curves.empty and study.runs == {} and study.note == ""
    assert not (small / "mlflow.db").exists()
    assert pd.api.types.is_integer_dtype(study.curves["epoch"])


def test_trials_of_points_the_space_no_longer_lists_are_counted_not_shown(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    study = stores.study("kernel")
    for kernel in (2, 3, 5):
        study.enqueue_trial({"kernel_size": kernel})
        complete(study, {"kernel_size": CategoricalDistribution((2, 3, 5))}, 0.1 * kernel)
    study.set_user_attr("space", {"kernel_size": [3, 5]})
    data = load_study_data(stores.storage, stores.tracking, "kernel")
    assert sorted(data.trials["kernel_size"]) == [3, 5] and data.outside == 1
    report = build_report(stores.storage, stores.tracking, tmp_path / "r.pdf")
    assert report.pages > 0
    text = pdf_text(report.path)
    if text is not None:
        assert "1 trial of a point the space no longer lists is kept" in " ".join(text.split())
