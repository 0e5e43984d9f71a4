"""The search-efficiency benchmark's scoring: budgets, joined runs and the key figure, on small
hand-written CSVs (no training)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "efficiency.py"
sys.path.insert(0, str(SCRIPT.parent))

import efficiency  # noqa: E402

HEADER = "search,trial,epochs,best_val_loss,state\n"
GRID = "".join(f"grid,{i},6,{v},complete\n" for i, v in enumerate((0.05, 0.02, 0.010, 0.04)))


def write(path: Path, rows: str) -> Path:
    path.write_text(HEADER + rows)
    return path


def test_best_within_counts_only_trials_finished_inside_the_budget():
    rows = [
        efficiency.Trial(2, 0.03, "complete"),
        efficiency.Trial(1, None, "fail"),
        efficiency.Trial(4, 0.01, "complete"),
    ]
    assert efficiency.best_within(rows, 3) == 0.03
    assert efficiency.best_within(rows, 7) == 0.01
    assert efficiency.best_within(rows, 1) == float("inf")


def test_joined_runs_keep_the_first_csv_row_of_a_shared_search(tmp_path):
    first = write(tmp_path / "a.csv", GRID + "optuna-tpe-pruned seed 0,0,6,0.02,complete\n")
    second = write(
        tmp_path / "b.csv",
        "grid,0,6,0.5,complete\n" + "optuna-tpe-pruned seed 1,0,6,0.03,complete\n",
    )
    curves = efficiency.load_runs([first, second])
    assert [t.best for t in curves["grid"]] == [0.05, 0.02, 0.010, 0.04]
    assert set(curves) == {"grid", "optuna-tpe-pruned seed 0", "optuna-tpe-pruned seed 1"}


@pytest.mark.parametrize(
    ("optuna_best", "met"),
    [
        (0.0101, True),  # within 2% of the grid's 0.010, and below Hyperband's
        (0.0103, False),  # 3% above the grid's best
    ],
)
def test_summary_of_two_runs_states_each_target(tmp_path, optuna_best, met):
    # grid: 24 epochs, so 30% is 7.2; Optuna's second trial ends at epoch 7, inside both budgets
    first = write(
        tmp_path / "a.csv",
        GRID
        + "keras-tuner-hyperband seed 0,0,2,0.2,complete\n"
        + "keras-tuner-hyperband seed 0,1,5,0.02,complete\n"
        + "optuna-tpe-pruned seed 0,0,1,0.9,pruned\n"
        + f"optuna-tpe-pruned seed 0,1,6,{optuna_best},complete\n"
        + "optuna-tpe-pruned seed 0,2,6,0.001,complete\n",  # past the budgets: not counted
    )
    second = write(
        tmp_path / "b.csv",
        GRID
        + "keras-tuner-hyperband seed 1,0,7,0.02,complete\n"
        + f"optuna-tpe-pruned seed 1,0,7,{optuna_best},complete\n",
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary", str(first), str(second)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == (0 if met else 1), done.stdout + done.stderr
    assert f"median best {optuna_best:.5f} within 7 epochs" in last
    assert f"(target <= +2%: {'met' if met else 'NOT met'})" in last
    assert "vs Hyperband 0.02000 (met)" in last
    assert (tmp_path / "a.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("files", "named"),
    [
        (["a.csv", "missing.csv"], "missing.csv"),
        (["a.csv"], "no grid rows"),
        (["a.csv", "other.csv"], "'epochs' is not what an efficiency.csv holds"),
    ],
)
def test_summary_of_unusable_csvs_is_a_one_line_error(tmp_path, files, named):
    write(tmp_path / "a.csv", "optuna-tpe-pruned seed 0,0,6,0.02,complete\n")
    (tmp_path / "other.csv").write_text("search,trial,best_val_loss\ngrid,0,0.01\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary", *(str(tmp_path / f) for f in files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert named in done.stderr
