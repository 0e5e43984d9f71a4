"""Repeats: each grid point trained N times with seeds of its own, as part of the grid, so a
study's resume, budget and slots treat a (point, repeat) as they treat a point."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

import sweep.run
import sweep.worker
from sweep.errors import SweepError
from sweep.points import REPEAT, is_listed, key, trial_seed
from sweep.repeats import with_repeats
from sweep.space import SpaceError
from sweep.space_file import load_space
from tests.conftest import idx_options, lines_to, write_dataset
from tests.test_signals import Command


def space_file(tmp_path: Path, extra: str = "", values: str = "[[2, 4], [4, 8]]") -> Path:
    path = tmp_path / "rep.yaml"
    path.write_text(
        "study: rep\n"
        "base: {filters: [2, 4], pool_blocks: 2, kernel_size: 3, batch_size: 64, epochs: 2}\n"
        f"params:\n  filters:\n    values: {values}\n{extra}"
    )
    return path


def test_repeats_multiply_the_grid_and_its_default_budget(tmp_path: Path) -> None:
    space = load_space(space_file(tmp_path, "repeats: 3\n"))
    points = space.grid_points()
    assert space.repeats == 3 and space.n_trials == 6 and len(points) == 6
    assert points[:3] == [  # every point's repeat 0 first
        {"filters": "[2, 4]", REPEAT: 0},
        {"filters": "[4, 8]", REPEAT: 0},
        {"filters": "[2, 4]", REPEAT: 1},
    ]
    assert len({key(p) for p in points}) == 6
    assert "3 runs each" in space.describe()
    once = load_space(space_file(tmp_path))
    assert once.grid_points() == [{"filters": "[2, 4]"}, {"filters": "[4, 8]"}]  # no repeat


def test_repeats_on_the_command_line_scale_a_whole_grid_and_keep_a_partial_one(
    tmp_path: Path,
) -> None:
    whole = with_repeats(load_space(space_file(tmp_path)), 3)
    assert (whole.repeats, whole.n_trials) == (3, 6)
    partial = with_repeats(load_space(space_file(tmp_path, "n_trials: 1\n")), 3)
    assert (partial.repeats, partial.n_trials) == (3, 1)
    assert with_repeats(whole, None) is whole


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("repeats: 0\n", "repeats: must be a whole number from 1 to 100, got 0"),
        ("repeats: three\n", "repeats: must be a whole number from 1 to 100, got 'three'"),
        ("repeats: true\n", "repeats: must be a whole number"),
        ("repeats: 3\nsampler: tpe\nn_trials: 4\n", "repeats: 3 needs sampler: grid"),
        ("repeats: 60\nn_trials: 200\n", "more than the grid's 120 trials (2 points x 60"),
    ],
)
def test_bad_repeats_are_one_line_errors_naming_the_key(
    tmp_path: Path, extra: str, error: str
) -> None:
    with pytest.raises(SpaceError, match=error.replace("(", r"\(").replace("[", r"\[")):
        load_space(space_file(tmp_path, extra))


def test_bad_repeats_flags_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="--repeats must be a whole number from 1 to 100, got 0"):
        with_repeats(load_space(space_file(tmp_path)), 0)
    tpe = load_space(space_file(tmp_path, "sampler: tpe\nn_trials: 4\n"))
    with pytest.raises(SweepError, match="--repeats 2 needs sampler: grid"):
        with_repeats(tpe, 2)


def test_a_trial_without_a_repeat_is_repeat_0_of_its_point() -> None:
    assert key({"filters": "[2, 4]"}) == key({"filters": "[2, 4]", REPEAT: 0})
    assert key({"filters": "[2, 4]"}) != key({"filters": "[2, 4]", REPEAT: 1})
    listed = {"filters": ["[2, 4]", "[4, 8]"]}
    assert is_listed({"filters": "[4, 8]", REPEAT: 2}, listed)
    assert not is_listed({"filters": "[8, 8]", REPEAT: 0}, listed)


def test_repeat_0_keeps_the_sweep_s_seed_and_others_get_their_own() -> None:
    assert trial_seed(7, 0) == 7
    seeds = [trial_seed(7, r) for r in range(1, 6)]
    assert len(set(seeds)) == 5 and 7 not in seeds
    assert seeds == [trial_seed(7, r) for r in range(1, 6)]  # the same on every machine
    assert trial_seed(8, 1) != trial_seed(7, 1)
    assert all(0 <= s < 2**31 for s in seeds)


class Fake:
    """Stands in for training: the value depends on the point and its repeat."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def factory(self, ctx):
        def objective(trial: optuna.Trial) -> float:
            overrides = ctx.space.suggest(trial)
            filters = str(ctx.space.config_for(overrides).filters)
            self.calls.append((filters, trial.params.get(REPEAT, 0)))
            return len(filters) / 100 + trial.params.get(REPEAT, 0) / 1000

        return objective


def test_each_point_and_repeat_runs_once_and_more_repeats_add_only_the_new(
    tmp_path: Path, run
) -> None:
    fake = Fake()
    study = run(load_space(space_file(tmp_path)), fake, isolate=False)
    assert sorted(fake.calls) == [("(2, 4)", 0), ("(4, 8)", 0)]
    space = with_repeats(load_space(space_file(tmp_path)), 3)
    study = run(space, fake, isolate=False, jobs=1)
    assert sorted(fake.calls[2:]) == [("(2, 4)", 1), ("(2, 4)", 2), ("(4, 8)", 1), ("(4, 8)", 2)]
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    run(space, fake, isolate=False)
    assert len(fake.calls) == 6  # a rerun repeats nothing


def test_slots_hold_a_repeated_grid_s_budget(tmp_path: Path, run, monkeypatch) -> None:
    """Two slots through the real scheduler: 3 points x 2 repeats, each once."""
    monkeypatch.setattr(sweep.worker, "start_server", lambda: None)
    fake = Fake()
    space = load_space(space_file(tmp_path, "repeats: 2\n", "[[2, 4], [4, 8], [8, 8]]"))
    study = run(space, fake, jobs=2, n_trials=5)
    assert len(study.trials) == 5 and len(set(fake.calls)) == 5  # no overshoot, none twice
    study = run(space, fake, jobs=2)
    expected = [(f, r) for f in ("(2, 4)", "(4, 8)", "(8, 8)") for r in (0, 1)]
    assert sorted(fake.calls) == sorted(expected) and len(study.trials) == 6


@pytest.mark.slow
def test_a_repeated_sweep_trains_each_repeat_with_its_own_seed_and_tags_it(
    tmp_path: Path,
) -> None:
    space = space_file(tmp_path)
    files = write_dataset(tmp_path / "idx")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "sweep.cli", "--output", str(out), "run", str(space)]
    sweep_cmd = Command([*cli, "--repeats", "2", "--jobs", "1", *idx_options(files)])
    printed = sweep_cmd.rest(timeout=300)
    assert sweep_cmd.process.returncode == 0, printed
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert sorted((t.params["filters"], t.params[REPEAT]) for t in study.trials) == [
        ("[2, 4]", 0),
        ("[2, 4]", 1),
        ("[4, 8]", 0),
        ("[4, 8]", 1),
    ]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rep").experiment_id])
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    by_point: dict[str, dict[str, str]] = {}
    for r in trials:
        by_point.setdefault(r.data.tags["sweep.point"], {})[r.data.tags["sweep.repeat"]] = (
            r.data.params["trial_seed"]
        )
    assert by_point == {
        "filters=[2, 4]": {"0": "0", "1": str(trial_seed(0, 1))},
        "filters=[4, 8]": {"0": "0", "1": str(trial_seed(0, 1))},
    }
    values = {(t.params["filters"], t.params[REPEAT]): t.value for t in study.trials}
    assert values[("[2, 4]", 0)] != values[("[2, 4]", 1)]  # other seeds, other weights

    # the report reads the repeats: intervals in the conclusion, the runs in "what matters"
    from reports.build import build_report
    from reports.sections import study_pages
    from reports.studies import load_study_data
    from reports.title import what_matters

    data = load_study_data(
        f"sqlite:///{out / 'optuna.db'}", f"sqlite:///{out / 'mlflow.db'}", "rep"
    )
    assert data.params == ["filters"] and sorted(data.trials["repeat"]) == [0, 0, 1, 1]
    assert sorted(data.reconstructions) == sorted(t.number for t in study.trials)  # each its own
    pages = study_pages(data)
    texts = [t.get_text() for fig in pages for t in fig.texts]
    [pictured] = [f for f in pages if "reconstructions (bottom)" in f.texts[0].get_text()]
    rows = [t.get_text().split("\n")[0] for t in pictured.texts[1:]]
    assert rows == ["filters = [2, 4]", "filters = [4, 8]"]  # one row per value, listed order
    assert any("(95% CI" in t and "2 runs" in t for t in texts), texts
    [row] = what_matters([data]).to_dict("records")
    assert (row["factor"], row["values"], row["runs each"]) == ("filters", "2", "2")
    report = build_report(
        f"sqlite:///{out / 'optuna.db'}", f"sqlite:///{out / 'mlflow.db'}", tmp_path
    )
    assert report.path.stat().st_size > 0

    rerun = Command([*cli, "--repeats", "2", "--jobs", "1", *idx_options(files)])
    assert "4 of 4 trials done, 0 to run" in rerun.rest(timeout=120)  # a rerun repeats nothing


def test_too_many_repeats_for_a_large_grid_are_refused(tmp_path: Path) -> None:
    values = "[" + ", ".join(f"[{2 + i}, {4 + i}]" for i in range(200)) + "]"
    with pytest.raises(SpaceError, match="--repeats 60: 200 points x 60 is more than 10,000"):
        with_repeats(load_space(space_file(tmp_path, values=values)), 60)


def test_a_parameter_named_repeat_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "named.yaml"
    path.write_text(
        "base: {filters: [2, 4], pool_blocks: 2}\n"
        "params:\n  repeat:\n    values: [{kernel_size: 3}, {kernel_size: 5}]\n"
    )
    with pytest.raises(SpaceError, match="params.repeat: 'repeat' names a trial's repeat"):
        load_space(path)


def test_a_grid_cut_short_has_one_run_of_each_point_before_a_second(tmp_path: Path, run) -> None:
    fake = Fake()
    space = load_space(space_file(tmp_path, "repeats: 3\n", "[[2, 4], [4, 8], [8, 8]]"))
    run(space, fake, isolate=False, n_trials=4)
    assert sorted(fake.calls) == [("(2, 4)", 0), ("(4, 8)", 0), ("(8, 8)", 0), ("(8, 8)", 1)]


def test_fewer_repeats_than_recorded_neither_count_the_others_nor_skip_points(
    tmp_path: Path, run
) -> None:
    """Cut short with repeats 3, then run with one per point: the points left still run."""
    fake = Fake()
    values = "[[2, 4], [4, 8], [8, 8], [8, 16]]"
    three = load_space(space_file(tmp_path, "repeats: 3\n", values))
    run(three, fake, isolate=False, n_trials=6)  # all repeat 0s, then two repeat 1s
    once = load_space(space_file(tmp_path, "", values))
    printed = io.StringIO()
    with lines_to(printed):
        study = run(once, fake, isolate=False)
    assert len(fake.calls) == 6  # every point's repeat 0 was done: nothing left
    assert len(study.trials) == 6
    values5 = "[[2, 4], [4, 8], [8, 8], [8, 16], [16, 16]]"
    study = run(load_space(space_file(tmp_path, "", values5)), fake, isolate=False)
    assert fake.calls[6:] == [("(16, 16)", 0)]  # the new value runs; the extra repeats don't count


def test_a_queued_repeat_keeps_its_seed_under_fewer_repeats(tmp_path: Path) -> None:
    space = load_space(space_file(tmp_path))  # one run per point
    study = optuna.create_study()
    study.enqueue_trial({"filters": "[4, 8]", REPEAT: 2})
    trial = study.ask()
    space.suggest(trial)
    assert trial.params[REPEAT] == 2
    study.enqueue_trial({"filters": "[4, 8]"})
    trial = study.ask()
    with_repeats(space, 3).suggest(trial)
    assert trial.params[REPEAT] == 0  # queued without a repeat: repeat 0, never drawn
