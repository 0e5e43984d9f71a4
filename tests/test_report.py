"""The report: each figure on small synthetic DataFrames, then a PDF built from tiny real stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from reports.conclusions import one_factor_conclusion
from reports.figures import plot_confusion_matrix, plot_phase_curves
from reports.joint import pareto_mask, plot_history, plot_intermediate
from reports.one_factor import plot_comparison, plot_value_curves
from reports.style import sci
from reports.tables import plot_summary_table, plot_tables
from sweep.cli import main
from sweep.errors import SweepError

PARAM = "filters"
ORDER = ["[8, 16, 32]", "[16, 32, 64]", "[32, 64, 128]"]


@pytest.fixture
def trials() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "number": [0, 1, 2],
            "state": ["complete", "complete", "failed"],
            "value": [0.0123, 0.0101, np.nan],
            "train_seconds": [10.0, 25.0, 3.0],
            "param_count": [21441, 84353, np.nan],
            PARAM: [ORDER[0], ORDER[1], ORDER[2]],
        }
    )


@pytest.fixture
def curves() -> pd.DataFrame:
    rows = []
    for trial, scale in ((0, 1.2), (1, 1.0)):
        for epoch in (1, 2, 3):
            rows.append(
                {"trial": trial, "metric": "loss", "epoch": epoch, "value": scale * 0.03 / epoch}
            )
            val = scale * 0.025 / epoch if epoch < 3 else scale * 0.0101 * 1.1
            rows.append({"trial": trial, "metric": "val_loss", "epoch": epoch, "value": val})
    return pd.DataFrame(rows)


def test_value_curves_draw_loss_and_val_loss_with_the_minimum_above(curves, trials) -> None:
    fig = plot_value_curves(curves, trials, PARAM, ORDER)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().splitlines()[0] for ax in axes] == [
        f"{PARAM} = {ORDER[0]}",
        f"{PARAM} = {ORDER[1]}",
        f"{PARAM} = {ORDER[2]}  [failed]",
    ]
    first = axes[0]
    assert len([ln for ln in first.lines if ln.get_label() in ("loss", "val_loss")]) == 2
    val = curves[(curves.trial == 0) & (curves.metric == "val_loss")]
    assert (
        f"min val_loss {sci(val.value.min())} (epoch {int(val.loc[val.value.idxmin(), 'epoch'])})"
        in first.get_title()
    )
    star = next(ln for ln in first.lines if ln.get_label() == "min val_loss")
    assert star.get_ydata()[0] == pytest.approx(val.value.min())
    assert "no curves recorded" in [t.get_text() for t in axes[2].texts]
    assert "[failed]" in axes[2].get_title()


def test_comparison_overlays_every_value_and_writes_the_conclusion(curves, trials) -> None:
    fig = plot_comparison(curves, trials, PARAM, ORDER, conclusion="X won.")
    overlay = fig.axes[0]
    assert [ln.get_label() for ln in overlay.lines] == ORDER[:2]
    assert overlay.get_legend() is not None
    bars_best, bars_time = fig.axes[1], fig.axes[2]
    assert [t.get_text() for t in bars_best.get_yticklabels()] == ORDER[:2]
    assert [p.get_width() for p in bars_best.patches] == pytest.approx([0.0123, 0.0101])
    assert [p.get_width() for p in bars_time.patches] == pytest.approx([10.0, 25.0])
    assert "X won." in [t.get_text() for t in fig.texts]


def test_conclusion_is_computed_from_the_numbers(trials) -> None:
    text = one_factor_conclusion(trials, PARAM)
    assert text.startswith(f"{PARAM} = [16, 32, 64] reached the lowest val_loss, 1.01e-02")
    assert "17.9% below the runner-up [8, 16, 32] (1.23e-02)" in text
    assert "2.50x the training time and 3.93x the parameters" in text
    assert "Not compared: 1 failed" in text


def test_conclusion_with_nothing_complete() -> None:
    df = pd.DataFrame(
        {
            "number": [0],
            "state": ["pruned"],
            "value": [np.nan],
            "train_seconds": [1.0],
            PARAM: ["a"],
        }
    )
    assert one_factor_conclusion(df, PARAM).startswith("No complete trial")


def test_tables_show_every_layer_and_the_total() -> None:
    table = pd.DataFrame(
        {
            "layer": ["image", "enc_s1_conv1"],
            "type": ["InputLayer", "Conv2D"],
            "output_shape": ["28x28x1", "28x28x8"],
            "params": [0, 80],
        }
    )
    fig = plot_tables({"filters=[8]": table}, "t")
    cells = fig.axes[0].tables[0].get_celld()
    texts = {cell.get_text().get_text() for cell in cells.values()}
    assert {"enc_s1_conv1", "28x28x8", "80", "total"} <= texts


def test_pareto_marks_only_non_dominated_points() -> None:
    cost = pd.Series([1, 2, 3, 4])
    value = pd.Series([0.5, 0.3, 0.4, 0.1])
    assert pareto_mask(cost, value).tolist() == [True, True, False, True]


def test_history_and_intermediate_figures() -> None:
    trials = pd.DataFrame(
        {
            "number": [0, 1, 2],
            "state": ["complete", "pruned", "complete"],
            "value": [0.3, np.nan, 0.2],
            "train_seconds": [1.0, 0.5, 2.0],
            "param_count": [10, 20, 30],
        }
    )
    fig = plot_history(trials, {"kernel_size": 0.7, "batch_size": 0.3})
    history, importances = fig.axes
    best = next(ln for ln in history.lines if ln.get_label() == "best so far")
    assert list(best.get_ydata()) == [0.3, 0.2]
    assert [p.get_width() for p in importances.patches] == pytest.approx([0.3, 0.7])
    inter = pd.DataFrame(
        {
            "trial": [0, 0, 1],
            "epoch": [1, 2, 1],
            "value": [0.5, 0.3, 0.9],
            "state": ["complete", "complete", "pruned"],
        }
    )
    ax = plot_intermediate(inter).axes[0]
    assert any(ln.get_marker() == "x" and ln.get_ydata()[0] == 0.9 for ln in ax.lines)


def test_sci_notation_for_small_values() -> None:
    assert sci(0.00813) == "8.13e-03"
    assert sci(12.5) == "12.5"
    assert sci(None) == "-"


# --- a report from real stores -------------------------------------------------------------


class LoggingFake:
    """A fake trainer through the real study code: logs per-epoch curves to MLflow like the
    real objective, reports to the pruner, takes milliseconds."""

    def __init__(self, fail_kernel: int | None = None) -> None:
        self.fail_kernel = fail_kernel

    def factory(self, ctx):
        space, tracker, parent = ctx.space, ctx.tracker, ctx.parent_run_id

        def objective(trial: optuna.Trial) -> float:
            config = ctx.profile.apply(space.config_for(space.suggest(trial)))
            if config.kernel_size == self.fail_kernel:
                raise RuntimeError("loss became nan at epoch 1")
            params = {
                **{k: str(v) for k, v in config.to_dict().items()},
                **trial.params,
                **ctx.run_params,
            }
            with tracker.trial_run(parent, space.study, trial.number, params) as run:
                trial.set_user_attr("mlflow_run_id", run.run_id)
                base = 0.01 * config.kernel_size / config.learning_rate**0.1
                trial.set_user_attr("param_count", 1000 * config.kernel_size)
                trial.set_user_attr("train_seconds", 0.1 * config.kernel_size)
                run.log_dict(
                    [
                        {
                            "layer": "image",
                            "type": "InputLayer",
                            "output_shape": "28x28x1",
                            "params": 0,
                        }
                    ],
                    "architecture.json",
                )
                for epoch in range(1, 4):
                    value = base / epoch
                    run.log_epoch(epoch, {"loss": value * 1.1, "val_loss": value})
                    trial.report(value, epoch)
                    if trial.should_prune():
                        run.finish("pruned")
                        raise optuna.TrialPruned()
                return base / 3

        return objective


@pytest.fixture(scope="module")
def stores(tmp_path_factory, idx_files) -> Path:
    import sweep.run
    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.run import run_sweep
    from sweep.space_file import load_space
    from sweep.storage import default_storage
    from sweep.tracking import Tracker

    out = tmp_path_factory.mktemp("stores")
    (out / "kernel.yaml").write_text(
        "study: kernel\nbase: {filters: [4, 8]}\nparams: {kernel_size: {values: [2, 3, 5]}}\n"
    )
    (out / "joint.yaml").write_text(
        "study: joint\nbase: {filters: [4, 8]}\nparams:\n  kernel_size: {values: [2, 3, 5, 7]}\n"
        "  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "sampler: {name: tpe, seed: 0, n_startup_trials: 3}\npruner: {name: median, n_startup_trials: 2}\nn_trials: 8\n"
    )
    (out / "single.yaml").write_text(
        "study: single\nbase: {filters: [4, 8]}\nparams: {kernel_size: {values: [3, 7]}}\n"
    )
    tracker = Tracker(f"sqlite:///{out / 'mlflow.db'}", artifact_root=out / "mlartifacts")
    source, storage = find_source(files=idx_files), default_storage(out)
    with pytest.MonkeyPatch.context() as patch:  # the fixture is module-wide
        patch.setattr(sweep.run, "make_objective", LoggingFake(fail_kernel=7).factory)
        for name in ("kernel", "joint", "single"):
            space = load_space(out / f"{name}.yaml")
            run_sweep(space, get_profile("quick"), source, storage, tracker, isolate=False)
    return out


def test_report_has_a_section_per_study(stores: Path, tmp_path: Path) -> None:
    from reports.build import build_report

    report = build_report(
        f"sqlite:///{stores / 'optuna.db'}", f"sqlite:///{stores / 'mlflow.db'}", tmp_path / "r.pdf"
    )
    assert list(report.sections) == ["title", "kernel", "single", "joint", "best encoder"]
    assert report.sections["kernel"][:2] == [
        "kernel_size: training curves per value",
        "kernel_size: comparison",
    ]
    assert any("Pareto" in title for title in report.sections["joint"])
    assert report.path.read_bytes()[:5] == b"%PDF-"
    assert report.pages == sum(len(v) for v in report.sections.values())


def test_report_cli_for_one_study_and_errors(stores: Path, tmp_path: Path, capsys) -> None:
    args = ["--output", str(stores), "report", "-o", str(tmp_path / "k.pdf")]
    assert main([*args, "kernel"]) == 0
    assert "studies: kernel)" in capsys.readouterr().out
    assert main([*args, "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nosuch'" in err and "joint, kernel, single" in err and err.count("\n") == 1


def test_report_on_an_empty_store_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["--output", str(tmp_path), "report"]) == 2
    assert "no studies in" in capsys.readouterr().err
    with pytest.raises(SweepError, match="make sweep-filters"):
        from reports.build import build_report

        build_report(
            f"sqlite:///{tmp_path / 'optuna.db'}",
            f"sqlite:///{tmp_path / 'm.db'}",
            tmp_path / "x.pdf",
        )


def test_a_single_complete_trial_and_a_failed_one_get_notes(stores: Path) -> None:
    from reports.studies import load_study_data
    from reports.title import summary_table

    study = load_study_data(
        f"sqlite:///{stores / 'optuna.db'}", f"sqlite:///{stores / 'mlflow.db'}", "single"
    )
    assert study.trials["state"].tolist() == ["complete", "failed"] or study.trials[
        "state"
    ].tolist() == ["failed", "complete"]
    text = one_factor_conclusion(study.trials, "kernel_size")
    assert "kernel_size = 3 reached the lowest val_loss" in text
    assert "the only value with a complete trial" in text and "Not compared: 1 failed" in text
    fig = plot_value_curves(
        study.curves, study.trials, "kernel_size", study.value_order["kernel_size"]
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert any("kernel_size = 7" in t and "[failed]" in t for t in titles)
    row = summary_table([study]).iloc[0]
    assert (row["complete"], row["failed"]) == (1, 1)


def test_phase_curves_mark_the_phase_boundary() -> None:
    history = pd.DataFrame(
        [
            {"epoch": e, "metric": m, "value": v}
            for e in (1, 2, 3, 4)
            for m, v in (
                ("loss", 1 / e),
                ("val_loss", 1.1 / e),
                ("accuracy", 0.5 + e / 10),
                ("val_accuracy", 0.5 + e / 11),
            )
        ]
    )
    fig = plot_phase_curves(history, boundary=2)
    loss_ax, acc_ax = fig.axes
    assert {ln.get_label() for ln in acc_ax.lines} >= {"accuracy", "val_accuracy"}
    boundary = [ln for ln in loss_ax.lines if list(ln.get_xdata()) == [2.5, 2.5]]
    assert len(boundary) == 1
    assert "phase 2 ->" in [t.get_text() for t in loss_ax.texts]


def test_confusion_matrix_shows_every_count() -> None:
    matrix = pd.DataFrame([[5, 1], [2, 7]], index=["a", "b"], columns=["a", "b"])
    ax = plot_confusion_matrix(matrix).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "5", "7"]


def test_architecture_table_shows_a_missing_parameter_count_as_a_dash() -> None:
    table = pd.DataFrame(
        {
            "layer": ["image", "enc_s1_conv1"],
            "type": ["InputLayer", "Conv2D"],
            "output_shape": ["28x28x1", "28x28x8"],
            "params": [0, np.nan],
        }
    )
    cells = plot_tables({"k": table}, "t").axes[0].tables[0].get_celld()
    texts = [cell.get_text().get_text() for cell in cells.values()]
    assert "-" in texts and "0" in texts and "total" in texts


def test_a_wide_summary_table_is_shrunk_to_the_page() -> None:
    summary = pd.DataFrame(
        [{f"column {i}": "a fairly long value " * 2 for i in range(9)} for _ in range(3)]
    )
    fig = plot_summary_table(summary, "t")
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    table = ax.tables[0].get_window_extent(renderer)
    assert table.width <= ax.get_window_extent(renderer).width + 1
