"""Bad flags: one line on stderr, exit code 2, nothing trained or recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.cli import main
from tests.conftest import SPACES


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "SPACE", "--seed=-1"], "--seed: must be from 0 to 2147483647, got -1"),
        (["run", "SPACE", "--seed", "4294967296"], "must be from 0 to 2147483647, got 4294967296"),
        (["run", "SPACE", "--seed", "x" * 500], "must be a whole number, got 'xxxx"),
        (["classify", "--seed", "-5"], "--seed: must be from 0"),
        (["run", "SPACE", "--n-trials", "many"], "--n-trials: invalid int value"),
        (["run", "SPACE", "--backend", "jax"], "--backend: invalid choice"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["run"], "the following arguments are required: space"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(argv, fragment, tmp_path: Path, capsys) -> None:
    argv = [str(SPACES / "filters.yaml") if a == "SPACE" else a for a in argv]
    with pytest.raises(SystemExit) as exited:
        main(["--output", str(tmp_path / "out"), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err
    assert len(err) < 400
    assert not (tmp_path / "out" / "optuna.db").exists()


@pytest.mark.parametrize(
    ("size", "pool_blocks", "fragment"),
    [
        ((7, 7), 2, "pool_blocks=2 is too deep for 7x7 images"),
        ((28, 14), 2, "pool_blocks=2 is too deep for 28x14 images"),
        ((28, 28), 3, "pool_blocks=3 is too deep for 28x28 images"),
    ],
)
def test_a_space_too_deep_for_the_images_fails_before_the_study_exists(
    size, pool_blocks, fragment, tmp_path: Path, capsys
) -> None:
    import numpy as np
    import optuna

    from sweep.idx import write_idx
    from tests.conftest import idx_options, write_dataset

    files = write_dataset(tmp_path / "idx", n_train=40, n_test=10)
    rows, cols = size
    rng = np.random.default_rng(0)
    write_idx(files.train_images, rng.integers(0, 255, (40, rows, cols)))
    write_idx(files.test_images, rng.integers(0, 255, (10, rows, cols)))
    out = tmp_path / "out"
    space = tmp_path / "deep.yaml"
    space.write_text(
        "study: deep\nbase: {filters: [4, 8, 8], epochs: 1}\n"
        "params:\n  filters:\n    values: [[2, 4, 4], [4, 8, 8]]\n"
    )
    argv = ["--output", str(out), "run", str(space), "--set", f"pool_blocks={pool_blocks}"]
    assert main([*argv, *idx_options(files)]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err and captured.err.count("\n") == 1
    assert "epoch" not in captured.out
    storage = f"sqlite:///{out / 'optuna.db'}"
    assert optuna.get_all_study_names(storage) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["studies", "postgresql://u:secretpw@127.0.0.1:9/db"],  # argparse: not an argument
        ["studies", "--storag=postgresql://u:secretpw@127.0.0.1:9/db"],
        ["studies", "--storage", "postgresql://u:secret/pw@127.0.0.1:9/db"],  # "/" in it
        ["studies", "--storage", "postgresql://u:sec@ret@127.0.0.1:9/db"],  # "@" in it
    ],
)
def test_no_password_is_printed_whatever_the_error(argv, tmp_path: Path, capsys) -> None:
    try:
        code = main(["--output", str(tmp_path / "out"), *argv])
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "secret" not in shown and "***" in shown


def test_a_size_parameter_beyond_the_split_fails_before_the_study_exists(
    tmp_path: Path, idx_args: list[str], capsys
) -> None:
    import optuna

    space = tmp_path / "sizes.yaml"
    space.write_text(
        "study: sizes\nbase: {filters: [4, 8], epochs: 1}\n"
        "params:\n  train_size:\n    values: [16, 100000]\n"
    )
    out = tmp_path / "out"
    assert main(["--output", str(out), "run", str(space), *idx_args]) == 2
    err = capsys.readouterr().err
    assert "params.train_size: train_size=100000 but the split has only" in err
    assert optuna.get_all_study_names(f"sqlite:///{out / 'optuna.db'}") == []
