"""Confirmation of a drawn study (sweep.confirm): `confirm: K` / `--confirm K` retrain the K best
configurations of a TPE or random search with new seeds once its budget is done, outside that
budget, never pruned; the report says whether the search's winner holds."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

import sweep.run
import sweep.worker
from reports.conclusions import confirmation_conclusion
from reports.statistics import REAL, UNKNOWN, WITHIN_NOISE, confirmation
from sweep.budget import next_step, plan
from sweep.cli import main
from sweep.confirm import best_configurations, with_confirm
from sweep.points import CONFIRM_SEEDS, CONFIRMS, REPEAT, factors, key
from sweep.run import optuna_job
from sweep.space import SpaceError
from sweep.space_file import load_space


def space_file(tmp_path: Path, extra: str = "confirm: 2\n", sampler: str = "tpe") -> Path:
    path = tmp_path / "drawn.yaml"
    path.write_text(
        "study: drawn\n"
        "base: {filters: [2, 4], pool_blocks: 2, batch_size: 64, epochs: 2}\n"
        "params:\n  kernel_size: {values: [2, 3, 5, 7]}\n"
        "  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        f"sampler: {{name: {sampler}, seed: 0, n_startup_trials: 2}}\nn_trials: 4\n{extra}"
    )
    return path


def test_confirm_is_read_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    space = load_space(space_file(tmp_path))
    assert space.confirm == 2 and space.n_trials == 4
    assert f"then its 2 best retrained with {CONFIRM_SEEDS} new seeds each" in space.describe()
    assert load_space(space_file(tmp_path, "")).confirm == 0
    assert with_confirm(load_space(space_file(tmp_path, "")), 1).confirm == 1
    assert with_confirm(space, None).confirm == 2  # the file's


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("confirm: -1\n", "confirm: must be a whole number from 0 to 20, got -1"),
        ("confirm: true\n", "must be a whole number"),
        ("confirm: three\n", "got 'three'"),
        ("confirm: 5\n", "confirm: 5 is more than the study's 4 trials"),
    ],
)
def test_bad_confirm_values_are_one_line_errors(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(SpaceError, match=expected):
        load_space(space_file(tmp_path, extra))


def test_a_grid_cannot_confirm_and_the_flag_says_so(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("study: g\nbase: {filters: [2, 4]}\nparams: {kernel_size: {values: [3]}}\n")
    with pytest.raises(SpaceError, match="needs a drawn study .* repeats: N instead"):
        with_confirm(load_space(grid), 2)
    code = main(["--output", str(tmp_path / "out"), "run", str(grid), "--confirm", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--confirm 1 needs a drawn study" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "optuna.db").exists()  # refused before anything is stored


class Fake:
    """Stands in for training through the real scheduler: the value depends on the
    configuration, and a little on the repeat (the seed); records each call."""

    def __init__(self, fail_repeat: int | None = None) -> None:
        self.calls: list[tuple[tuple, int, bool]] = []
        self.fail_repeat = fail_repeat

    def factory(self, ctx):
        def objective(trial: optuna.Trial) -> float:
            ctx.space.suggest(trial)
            repeat = trial.params.get(REPEAT, 0)
            confirming = bool(trial.user_attrs.get(CONFIRMS))
            self.calls.append((key(factors(trial.params)), repeat, confirming))
            if confirming and repeat == self.fail_repeat:
                raise RuntimeError("this seed fails")
            value = trial.params.get("kernel_size", 3) / 100 + trial.params["learning_rate"]
            return value * (1 + repeat / 100)

        return objective


def search_best(study: optuna.Study, k: int) -> list[tuple]:
    search = [t for t in study.trials if not t.user_attrs.get(CONFIRMS) and t.value is not None]
    ranked = sorted(search, key=lambda t: t.value)
    return list(dict.fromkeys(key(factors(t.params)) for t in ranked))[:k]


def test_the_best_configurations_train_with_new_seeds_after_the_search(tmp_path: Path, run) -> None:
    fake = Fake()
    space = load_space(space_file(tmp_path))
    study = run(space, fake, isolate=False)
    search = [c for c in fake.calls if not c[2]]
    confirming = [c for c in fake.calls if c[2]]
    assert len(search) == 4 and all(r == 0 for _, r, _ in search)
    assert fake.calls[:4] == search  # the search first, its budget whole
    assert len(confirming) == 2 * CONFIRM_SEEDS
    best = search_best(study, 2)
    assert {(c, r) for c, r, _ in confirming} == {
        (c, r) for c in best for r in range(1, CONFIRM_SEEDS + 1)
    }
    assert [r for _, r, _ in confirming] == [1, 1, 2, 2, 3, 3]  # every first seed first
    assert plan(study, space).n_trials == 0
    run(space, fake, isolate=False)
    assert len(fake.calls) == 4 + 2 * CONFIRM_SEEDS  # a rerun repeats nothing


def test_extending_the_search_confirms_only_its_new_best(tmp_path: Path, run) -> None:
    fake = Fake()
    space = load_space(space_file(tmp_path, "confirm: 1\n"))
    study = run(space, fake, isolate=False)
    before = search_best(study, 1)
    study = run(space, fake, isolate=False, n_trials=8)
    after = search_best(study, 1)
    new = [c for c in fake.calls[4 + CONFIRM_SEEDS :] if c[2]]
    assert len([c for c in fake.calls if not c[2]]) == 8
    assert [c for c, _, _ in new] == ([] if after == before else after * CONFIRM_SEEDS)


def test_slots_share_the_confirmation_and_run_nothing_twice(
    tmp_path: Path, run, monkeypatch
) -> None:
    monkeypatch.setattr(sweep.worker, "start_server", lambda: None)
    fake = Fake()
    study = run(load_space(space_file(tmp_path)), fake, jobs=2)
    points = [(c, r) for c, r, _ in fake.calls]
    assert len(points) == len(set(points)) == 4 + 2 * CONFIRM_SEEDS
    assert len(study.trials) == 4 + 2 * CONFIRM_SEEDS


def test_a_slot_waits_for_the_search_s_last_trial_rather_than_leave(tmp_path: Path) -> None:
    """Once the search's budget is taken, a free slot waits for its last trials (the best
    are known when they end) instead of leaving the confirmation to one slot."""
    space = load_space(space_file(tmp_path, "confirm: 1\n"))
    study = optuna.create_study()
    for _ in range(3):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.5)
    last = study.ask()  # the search's last trial, still running (in this process)
    space.suggest(last)
    step = next_step(study, space, 4)
    assert step.action == "wait" and step.soon and step.elsewhere == 1
    study.tell(last, 0.1)
    step = next_step(study, space, 4)
    assert step.action == "run" and step.point[REPEAT] == 1
    assert factors(step.point) == factors(last.params)  # the best, now that it ended


def test_a_failed_confirmation_run_is_tried_again_then_queued_by_the_next_run(
    tmp_path: Path, run
) -> None:
    space = load_space(space_file(tmp_path, "confirm: 1\n"))
    fails = Fake(fail_repeat=2)
    study = run(space, fails, isolate=False)
    assert [r for _, r, c in fails.calls if c] == [1, 2, 2, 3]  # once more at once, then on
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 2 and {t.params[REPEAT] for t in failed} == {2}
    assert plan(study, space).n_trials == 1 and len(plan(study, space).retry) == 1
    fake = Fake()
    study = run(space, fake, isolate=False)
    assert [(r, c) for _, r, c in fake.calls] == [(2, True)]
    assert plan(study, space).n_trials == 0


def test_failed_search_trials_leave_the_confirmation_its_starts(tmp_path: Path, run) -> None:
    """The run counts the search's starts and the confirmation's apart: search trials that
    fail do not use up the confirmation's."""

    class FailingSearch(Fake):
        def factory(self, ctx):
            inner = super().factory(ctx)

            def objective(trial):
                value = inner(trial)
                if not trial.user_attrs.get(CONFIRMS) and trial.number in (1, 2):
                    raise RuntimeError("out of memory")
                return value

            return objective

    fake = FailingSearch()
    study = run(load_space(space_file(tmp_path)), fake, isolate=False, n_trials=3)
    assert len([c for c in fake.calls if not c[2]]) == 3  # the search's 3 starts, 2 failed
    assert len([c for c in fake.calls if c[2]]) == 0  # its budget is not done: no confirmation
    assert plan(study, load_space(space_file(tmp_path)), 3).n_trials == 2 + 2 * CONFIRM_SEEDS
    fake = Fake()
    study = run(load_space(space_file(tmp_path)), fake, isolate=False, n_trials=3)
    assert len([c for c in fake.calls if not c[2]]) == 2  # the search's last two
    assert len([c for c in fake.calls if c[2]]) == 2 * CONFIRM_SEEDS  # then all six


def test_retries_queued_by_a_plan_skip_points_done_since(tmp_path: Path) -> None:
    from sweep.budget import Plan, queue_retries

    space = load_space(space_file(tmp_path))
    study = optuna.create_study()
    point = {"kernel_size": 3, "learning_rate": 1e-3, REPEAT: 1}
    study.enqueue_trial(point, user_attrs={CONFIRMS: True})
    trial = study.ask()
    space.suggest(trial)
    study.tell(trial, 0.2)  # another worker ran it after this one planned
    queue_retries(study, space, Plan(4, 4, 1, (point,), 1))
    assert not [t for t in study.trials if t.state.name == "WAITING"]


def test_n_trials_below_confirm_is_refused(tmp_path: Path, capsys) -> None:
    path = str(space_file(tmp_path))
    code = main(["--output", str(tmp_path / "o"), "run", path, "--n-trials", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "confirm 2 is more than --n-trials 1" in err


def test_a_confirmation_trial_is_never_pruned_and_is_tagged() -> None:
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    study = optuna.create_study(pruner=AlwaysPrune())
    study.enqueue_trial({"x": 1, REPEAT: 1}, user_attrs={CONFIRMS: True})
    confirming, searching = study.ask(), study.ask()
    job = optuna_job(confirming)
    job.report(1, 0.5)  # not pruned
    assert job.tags == {"sweep.confirms": "true"}
    with pytest.raises(optuna.TrialPruned):
        optuna_job(searching).report(1, 0.5)


def test_best_configurations_are_distinct_and_best_first(tmp_path: Path) -> None:
    space = load_space(space_file(tmp_path))
    study = optuna.create_study()
    dist = {
        "kernel_size": optuna.distributions.CategoricalDistribution([2, 3, 5, 7]),
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    for kernel, value in ((3, 0.2), (5, 0.1), (5, 0.15), (7, 0.3)):
        params = {"kernel_size": kernel, "learning_rate": 1e-3}
        study.add_trial(optuna.create_trial(params=params, distributions=dist, value=value))
    best = best_configurations(study.trials, space)
    assert [b["kernel_size"] for b in best] == [5, 3]  # 5 drawn twice counts once


# --- the statistics and the words -----------------------------------------------------------


def confirmed_frame(new: dict[int, list[float]]) -> pd.DataFrame:
    """Search trials #0 (best, 1.0), #1 (1.1), #2 (1.2) of kernel 3, 5, 7, and new seeds."""
    rows = [
        {"number": n, "value": v, "kernel_size": k, "confirms": False}
        for n, (k, v) in enumerate(((3, 1.0), (5, 1.1), (7, 1.2)))
    ]
    kernel = {0: 3, 1: 5, 2: 7}
    number = 3
    for trial, values in new.items():
        for v in values:
            rows.append(
                {"number": number, "value": v, "kernel_size": kernel[trial], "confirms": True}
            )
            number += 1
    return pd.DataFrame(rows)


def test_a_winner_that_stays_best_by_more_than_the_noise_holds() -> None:
    found = confirmation(
        confirmed_frame({0: [1.05, 1.06, 1.04], 1: [1.3, 1.31, 1.29]}), ["kernel_size"]
    )
    assert [c.rank for c in found.confirmed] == [1, 2] and found.holds
    assert found.difference.verdict == REAL and found.winner.runs.n == 3
    text = confirmation_conclusion(found, 6)
    assert "The winner holds" in text and "a real difference" in text
    assert "trial #0 (val_loss 1 in the search), averages 1.05 on 3 new seeds" in text
    assert "its search run was 4.8% better" in text  # 1.0 against a mean of 1.05


def test_a_winner_beaten_on_new_seeds_does_not_hold() -> None:
    found = confirmation(
        confirmed_frame({0: [1.3, 1.31, 1.29], 1: [1.05, 1.06, 1.04], 2: [1.2, 1.21, 1.19]}),
        ["kernel_size"],
    )
    assert not found.holds and found.against_winner.winner.value == 1
    assert found.against_winner.runner.value == 0 and found.against_winner.verdict == REAL
    text = confirmation_conclusion(found, 9)
    assert "does not hold: on the new seeds #1 (search rank 2) is lower than it" in text


def test_configurations_within_the_noise_cannot_be_told_apart() -> None:
    found = confirmation(
        confirmed_frame({0: [1.0, 1.3, 1.1], 1: [1.05, 1.35, 1.12]}), ["kernel_size"]
    )
    assert found.difference.verdict == WITHIN_NOISE
    assert "cannot be told apart" in confirmation_conclusion(found, 6)


def test_one_new_seed_each_leaves_the_winner_untested() -> None:
    found = confirmation(confirmed_frame({0: [1.0], 1: [1.2]}), ["kernel_size"])
    assert found.difference.verdict == UNKNOWN
    text = confirmation_conclusion(found, 6)
    assert "(2 of 6 runs complete)" in text and "untested" in text


def test_a_maximised_metric_confirms_the_highest() -> None:
    frame = confirmed_frame({0: [0.9, 0.91, 0.89], 1: [0.95, 0.96, 0.94]})
    frame.loc[:2, "value"] = [0.97, 0.93, 0.9]  # the search's best is the highest
    found = confirmation(frame, ["kernel_size"], maximize=True)
    assert found.winner.number == 0 and not found.holds
    assert found.against_winner.percent > 0 and found.against_winner.verdict == REAL
    assert "is higher than it" in confirmation_conclusion(found, 6, "val_accuracy", True)


def test_no_complete_confirmation_run_gives_nothing() -> None:
    assert confirmation(confirmed_frame({}), ["kernel_size"]) is None


def test_a_winner_whose_new_seeds_diverged_is_said_so() -> None:
    inf = float("inf")
    found = confirmation(confirmed_frame({0: [inf, inf], 1: [1.2, 1.3]}), ["kernel_size"])
    assert found.winner is None and [c.number for c in found.confirmed] == [1]
    assert "winner has no complete confirmation run (with a finite value)" in (
        confirmation_conclusion(found, 6)
    )


def test_the_report_has_a_confirmation_page(tmp_path: Path, run) -> None:
    from reports.build import build_report
    from reports.sections import confirmation_page
    from reports.studies import load_study_data

    study = run(load_space(space_file(tmp_path)), Fake(), isolate=False)
    one = tmp_path / "one.yaml"  # a drawn study of one parameter: its own pages, then this one
    one.write_text(
        space_file(tmp_path)
        .read_text()
        .replace("study: drawn", "study: one")
        .replace("  kernel_size: {values: [2, 3, 5, 7]}\n", "")
    )
    run(load_space(one), Fake(), isolate=False)
    tracking = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    report = build_report(run.storage, tracking, tmp_path)
    assert "drawn: does the winner hold on new seeds?" in report.sections["drawn"]
    assert "one: does the winner hold on new seeds?" in report.sections["one"]
    assert len(study.trials) == 4 + 2 * CONFIRM_SEEDS
    page = confirmation_page(load_study_data(run.storage, tracking, "drawn"))
    text = page.texts[1].get_text().replace("\n", " ")
    assert f"({2 * CONFIRM_SEEDS} of {2 * CONFIRM_SEEDS} runs complete)" in text


def test_keras_tuner_leaves_a_file_s_confirm_and_refuses_the_flag(tmp_path: Path, capsys) -> None:
    from sweep.tuner import check_space

    check_space(load_space(space_file(tmp_path)), "random")  # the file's: Optuna's, not used
    path = str(space_file(tmp_path))
    code = main(
        ["--output", str(tmp_path / "o"), "run", path, "--backend", "keras-tuner", "--confirm", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--confirm 1: the keras-tuner backend does not retrain" in err
