"""Study logic driven by a fake objective through the same code (no Keras): budgets,
continuing a study, grid points never repeated, failures that do not stop a study."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sweep.run
from sweep.budget import plan
from sweep.data import find_source
from sweep.errors import SweepError
from sweep.profiles import get_profile
from sweep.run import run_sweep
from sweep.space_file import load_space
from sweep.storage import default_storage, mask_url, open_storage
from sweep.tracking import Tracker
from tests.conftest import lines_to


class FakeObjective:
    """Returns a value computed from the config; raises for configs listed in `fail`."""

    def __init__(self, fail: set[str] | None = None, fail_times: int = 10**6) -> None:
        self.fail, self.fail_times, self.calls = fail or set(), fail_times, []

    def factory(self, ctx):
        def objective(trial: optuna.Trial) -> float:
            overrides = ctx.space.suggest(trial)
            config = ctx.profile.apply(ctx.space.config_for(overrides))
            key = str(config.filters)
            self.calls.append(key)
            if key in self.fail and self.fail_times > 0:
                self.fail_times -= 1
                raise RuntimeError(f"boom for {key}")
            return config.learning_rate + len(key) / 100

        return objective


@pytest.fixture
def env(tmp_path: Path, idx_files, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    tracker = Tracker(f"sqlite:///{out / 'mlflow.db'}", artifact_root=out / "art")
    source = find_source(files=idx_files)
    storage = default_storage(out)

    def run(space, fake, progress_stream=None, **kwargs):
        monkeypatch.setattr(sweep.run, "make_objective", fake.factory)
        with lines_to(progress_stream or io.StringIO()):
            profile = get_profile("quick")
            return run_sweep(space, profile, source, storage, tracker, isolate=False, **kwargs)

    return run, tracker, storage


def by_state(study: optuna.Study) -> dict[str, list]:
    result: dict[str, list] = {}
    for t in study.trials:
        result.setdefault(t.state.name, []).append(t.params.get("filters"))
    return result


def test_grid_runs_each_point_once_and_a_rerun_adds_nothing(env, tiny_space: Path) -> None:
    run, _, storage = env
    space = load_space(tiny_space)
    fake = FakeObjective()
    study = run(space, fake)
    assert sorted(by_state(study)["COMPLETE"]) == sorted(space.grid()["filters"])
    study = run(space, fake)
    assert len(study.trials) == 3
    assert len(fake.calls) == 3


def test_grid_with_a_smaller_budget_then_continued(env, tiny_space: Path) -> None:
    run, _, _ = env
    space = load_space(tiny_space)
    fake = FakeObjective()
    assert len(run(space, fake, n_trials=2).trials) == 2
    study = run(space, fake)
    assert sorted(by_state(study)["COMPLETE"]) == sorted(space.grid()["filters"])
    with pytest.raises(SweepError, match="more than the 3 points"):
        run(space, fake, n_trials=4)


def test_a_failing_trial_does_not_stop_the_study_and_is_retried_next_run(
    env, tiny_space: Path
) -> None:
    run, _, _ = env
    space = load_space(tiny_space)
    fake = FakeObjective(fail={"(2, 4)"}, fail_times=1)
    study = run(space, fake)
    states = by_state(study)
    assert states["FAIL"] == ["[2, 4]"]
    assert sorted(states["COMPLETE"]) == ["[4, 8]", "[8, 8]"]
    study = run(space, fake)
    states = by_state(study)
    assert sorted(states["COMPLETE"]) == ["[2, 4]", "[4, 8]", "[8, 8]"]
    assert fake.calls.count("(4, 8)") == 1 and fake.calls.count("(8, 8)") == 1


def test_tpe_budget_is_study_wide_and_failures_do_not_count(env, tmp_path: Path) -> None:
    run, _, _ = env
    path = tmp_path / "tpe.yaml"
    path.write_text(
        "study: tpe\nbase: {filters: [4, 8], epochs: 1}\n"
        "params:\n  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  filters: {values: [[4, 8], [2, 4]]}\n"
        "sampler: {name: tpe, seed: 1}\npruner: median\nn_trials: 5\n"
    )
    space = load_space(path)
    fake = FakeObjective()
    assert len(run(space, fake, n_trials=3).trials) == 3
    study = run(space, fake)
    assert len(by_state(study)["COMPLETE"]) == 5
    assert len(run(space, fake).trials) == 5
    failing = FakeObjective(fail={"(4, 8)", "(2, 4)"})
    study = run(space, failing, n_trials=7)
    assert len(by_state(study)["FAIL"]) == 2
    assert len(by_state(study)["COMPLETE"]) == 5


def test_a_callback_sees_each_ended_trial_and_study_stop_ends_the_run(env, tiny_space) -> None:
    run, tracker, _ = env
    seen: list[tuple[int, str]] = []

    def stop_after_two(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen.append((trial.number, trial.state.name))
        if len(seen) == 2:
            study.stop()

    space = load_space(tiny_space)
    fake = FakeObjective(fail={"(8, 8)"})  # the most expensive point: the first to run
    study = run(space, fake, callbacks=[stop_after_two])
    assert [state for _, state in seen] == [t.state.name for t in study.trials[:2]]
    assert len(study.trials) == 2 and len(fake.calls) == 2
    parent = tracker.client.search_runs(
        [tracker.client.get_experiment_by_name("tiny").experiment_id], "tags.`sweep.role` = 'study'"
    )[0]
    assert parent.info.status == "FINISHED"
    study = run(space, fake)  # a rerun continues with the point left
    assert len(fake.calls) == 4 and sorted(by_state(study)) == ["COMPLETE", "FAIL"]


def test_one_parent_run_per_study_holding_the_best_trial(env, tiny_space: Path) -> None:
    run, tracker, _ = env
    space = load_space(tiny_space)
    run(space, FakeObjective(), n_trials=1)
    study = run(space, FakeObjective())
    experiment = tracker.client.get_experiment_by_name("tiny")
    parents = tracker.client.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_loss"] == pytest.approx(study.best_value)
    assert parent.data.tags["best.filters"] == study.best_params["filters"]
    assert parent.data.metrics["n_complete"] == 3


class TrackedFake:
    """A trial run per trial, as the real objective logs it; each trial beats the ones before."""

    def factory(self, ctx):
        def objective(trial: optuna.Trial) -> float:
            ctx.space.suggest(trial)
            study = ctx.space.study
            with ctx.tracker.trial_run(ctx.parent_run_id, study, trial.number, trial.params) as run:
                trial.set_user_attr("mlflow_run_id", run.run_id)
                return 1 / (trial.number + 1)

        return objective


def test_the_best_trial_run_alone_is_tagged_best_and_the_tag_moves(env, tiny_space: Path) -> None:
    run, tracker, _ = env
    space = load_space(tiny_space)

    def tagged() -> list[str]:
        experiment = tracker.client.get_experiment_by_name("tiny")
        runs = tracker.client.search_runs([experiment.experiment_id], "tags.`sweep.best` = 'true'")
        return [r.info.run_id for r in runs]

    first_best = run(space, TrackedFake(), n_trials=1).best_trial.user_attrs["mlflow_run_id"]
    assert tagged() == [first_best]
    study = run(space, TrackedFake())
    best_run = study.best_trial.user_attrs["mlflow_run_id"]
    assert best_run != first_best
    assert tagged() == [best_run]
    parent = tracker.client.get_run(
        tracker.client.get_run(best_run).data.tags["mlflow.parentRunId"]
    )
    assert parent.data.tags["best_run_id"] == best_run
    assert parent.data.tags["best.filters"] == study.best_params["filters"]


def test_plan_counts_done_points_and_queues_failed_ones(tmp_path: Path, tiny_space: Path) -> None:
    space = load_space(tiny_space)
    study = optuna.create_study(sampler=space.make_sampler())
    for label, state in (("[2, 4]", TrialState.COMPLETE), ("[4, 8]", TrialState.FAIL)):
        study.enqueue_trial({"filters": label})
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    todo = plan(study, space)
    assert (todo.budget, todo.done, todo.n_trials) == (3, 1, 2)
    assert todo.retry == ({"filters": "[4, 8]"},)


def test_unreachable_storage_is_one_line_with_the_password_masked() -> None:
    with pytest.raises(SweepError) as info:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/sweeps")
    message = str(info.value)
    assert "s3cret" not in message and "***" in message
    assert "\n" not in message
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_profiles_settle_auto_precision_and_leave_a_chosen_one() -> None:
    import dataclasses

    from models.config import AutoencoderConfig
    from sweep.tf_env import has_gpu

    quick = get_profile("quick")
    if not has_gpu():  # measured: bfloat16 costs more than 2% val_loss on a CPU
        assert quick.apply(AutoencoderConfig()).precision == "float32"
    chosen = AutoencoderConfig(precision="mixed_bfloat16")
    assert quick.apply(chosen).precision == "mixed_bfloat16"
    pinned = dataclasses.replace(quick, precision="mixed_float16")
    assert pinned.apply(AutoencoderConfig()).precision == "mixed_float16"
    assert pinned.apply(chosen).precision == "mixed_bfloat16"


@pytest.mark.parametrize(
    ("precision", "flags", "warned"),
    [
        ("mixed_bfloat16", {"avx2", "avx512f"}, True),  # emulated: slower than float32
        ("mixed_bfloat16", {"avx512f", "avx512_bf16"}, False),
        ("mixed_bfloat16", {"amx_bf16"}, False),
        ("mixed_float16", {"avx512_bf16"}, True),
        ("float32", set(), False),
    ],
)
def test_a_precision_slower_than_float32_on_this_cpu_is_named_once(
    env, tiny_space: Path, monkeypatch, precision: str, flags: set[str], warned: bool
) -> None:
    import sweep.tf_env
    from sweep.space_file import apply_overrides

    run, _, _ = env
    monkeypatch.setattr(sweep.tf_env, "has_gpu", lambda: False)
    monkeypatch.setattr(sweep.tf_env, "cpu_flags", lambda: flags)
    stream = io.StringIO()
    space = apply_overrides(load_space(tiny_space), {"precision": precision})
    study = run(space, FakeObjective(), progress_stream=stream)
    notes = [line for line in stream.getvalue().splitlines() if line.startswith("Note:")]
    assert len(notes) == (1 if warned else 0)
    if warned:
        assert precision in notes[0] and "float32" in notes[0]
    assert len(study.trials) == 3  # a note, never a stop


def _kernel_space(tmp_path: Path, values: list[int], sampler: str = "grid") -> Path:
    path = tmp_path / "kernel.yaml"
    budget = "" if sampler == "grid" else "n_trials: 2\n"
    path.write_text(
        f"study: kernel\nsampler: {sampler}\n{budget}base: {{filters: [4, 8], epochs: 1}}\n"
        f"params:\n  kernel_size:\n    values: {values}\n"
    )
    return path


def test_an_edited_grid_runs_its_new_points_and_keeps_the_old_ones(env, tmp_path: Path) -> None:
    run, tracker, _ = env
    asked: list[int] = []

    class Kernels(FakeObjective):
        def factory(self, ctx):
            def objective(trial: optuna.Trial) -> float:
                kernel = ctx.space.suggest(trial)["kernel_size"]
                asked.append(kernel)
                return float(kernel)  # kernel 2, no longer listed, stays the best

            return objective

    run(load_space(_kernel_space(tmp_path, [2, 3])), Kernels())
    assert asked == [3, 2]  # the grid starts with its most expensive point
    out = io.StringIO()
    edited = load_space(_kernel_space(tmp_path, [3, 5]))
    study = run(edited, Kernels(), progress_stream=out)
    assert asked == [3, 2, 5]
    assert "0 of 2" not in out.getvalue() and "1 of 2 trials done, 1 to run" in out.getvalue()
    assert "1 trial of a point no longer in the space is kept and not counted." in out.getvalue()
    kept = {t.params["kernel_size"]: t.state for t in study.trials}
    assert kept == {2: TrialState.COMPLETE, 3: TrialState.COMPLETE, 5: TrialState.COMPLETE}
    from sweep.study import best_summary

    summary = best_summary(study, edited)
    assert summary["best.kernel_size"] == "3" and summary["n_outside_space"] == 1
    out = io.StringIO()
    run(edited, Kernels(), progress_stream=out)
    assert asked == [3, 2, 5] and "Nothing left to run" in out.getvalue()


def test_a_tpe_study_whose_values_changed_is_refused_before_training(env, tmp_path) -> None:
    run, _, _ = env
    fake = FakeObjective()
    run(load_space(_kernel_space(tmp_path, [2, 3], "random")), fake)
    calls = len(fake.calls)
    with pytest.raises(SweepError, match="params.kernel_size changed since study 'kernel'"):
        run(load_space(_kernel_space(tmp_path, [3, 5], "random")), fake, n_trials=4)
    assert len(fake.calls) == calls


def test_a_range_that_changed_its_kind_is_refused_before_training(env, tmp_path) -> None:
    run, _, _ = env
    path = tmp_path / "lr.yaml"
    text = (
        "study: lr\nsampler: random\nn_trials: 2\nbase: {{filters: [4, 8]}}\n"
        "params:\n  learning_rate: {{low: 1.0e-4, high: 1.0e-2{}}}\n"
    )
    path.write_text(text.format(""))
    fake = FakeObjective()
    run(load_space(path), fake)
    path.write_text(text.format(", log: true"))
    with pytest.raises(SweepError, match="params.learning_rate changed since study 'lr'"):
        run(load_space(path), fake, n_trials=4)
    assert len(fake.calls) == 2


def test_a_failure_before_the_trial_recorded_it_is_said_and_kept(env, tiny_space) -> None:
    run, _, _ = env
    out = io.StringIO()
    study = run(load_space(tiny_space), FakeObjective(fail={"(2, 4)"}), progress_stream=out)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["RuntimeError: boom for (2, 4)"]
    line = f"    [t{failed[0].number}] -> failed: RuntimeError: boom for (2, 4)"
    assert line in out.getvalue()
