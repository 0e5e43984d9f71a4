"""The package as a user installs it: built from the clone into a fresh environment (not
editable) and run from a folder outside the clone on a shipped space given by its name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, idx_options, write_dataset

pytestmark = pytest.mark.slow

# What the clone holds besides the sources: environments, stores and build output.
NOT_SOURCES = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def make_venv(folder: Path) -> tuple[Path, Path]:
    """A venv whose Python also sees this environment's packages (TensorFlow, Optuna, ...)
    through a path line in a .pth file; the .pth files in that folder, this project's editable
    finder among them, are not processed, so the project itself is not importable there yet.
    Returns its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run_python(python, code, folder))
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "parent_environment.pth").write_text("".join(f"{path}\n" for path in ours))
    return python, site


def run_python(python: Path, code: str, cwd: Path) -> str:
    """What `code` prints, run by `python` in `cwd`."""
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def installed_sweep(python: Path, *args: str, cwd: Path) -> str:
    """The output of the venv's `sweep` command run in `cwd`, which must exit 0."""
    command = [str(python.parent / "sweep"), *args]
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would put the clone on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_installed_package_runs_a_shipped_space_by_name(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the clone
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    python, site = make_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # no ./search_spaces: `filters` is the shipped one
    elsewhere.mkdir()
    hidden = subprocess.run(
        [str(python), "-c", "import sweep"], cwd=elsewhere, capture_output=True, env=clean_env()
    )
    assert hidden.returncode != 0, "the editable install leaked into the new environment"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--no-index", str(source)], check=True, env=clean_env(), timeout=300)

    imported = Path(run_python(python, "import sweep; print(sweep.__file__)", elsewhere))
    assert imported.is_relative_to(site) and not imported.is_relative_to(ROOT)

    out = tmp_path / "out"
    shown = installed_sweep(python, "--output", str(out), "show", "filters", cwd=elsewhere)
    assert f"{site / 'search_spaces' / 'filters.yaml'}: base config" in shown
    assert "Total parameters: " in shown

    files = write_dataset(tmp_path / "idx", n_train=400)  # 320 train / 80 validation images
    settings = ["epochs=1", "train_size=256", "val_size=64"]
    command = ["--output", str(out), "run", "filters", "--set", *settings]
    command += ["--n-trials", "1", *idx_options(files)]  # one of the grid's four points
    installed_sweep(python, *command, cwd=elsewhere)
    study = optuna.load_study(study_name="filters", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
