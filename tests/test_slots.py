"""Several trials at once: how the slots are chosen, and the real scheduler driving N slots with
a fake objective (budget held exactly, no grid point twice, most expensive first). The trial
processes' thread and GPU limits, Ctrl-C with two trials running: test_slots_e2e.py."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import sweep.run
import sweep.worker
from models.config import AutoencoderConfig
from models.plan import multiply_adds, param_count, training_cost
from sweep.budget import by_cost
from sweep.context import load_split
from sweep.data import find_source
from sweep.errors import SweepError
from sweep.profiles import get_profile
from sweep.run import grid_order, run_sweep
from sweep.slots import Slots, choose, parse_gpus, parse_jobs, usable_cores
from sweep.space_file import load_space
from sweep.storage import default_storage
from sweep.tracking import Tracker
from tests.conftest import lines_to

GiB = 2**30


def test_auto_runs_a_trial_per_core_with_twice_its_share_but_no_more_slots_than_trials() -> None:
    slots = choose("auto", to_run=4, cores=2, memory=64 * GiB)
    assert (slots.jobs, slots.threads, slots.gpus) == (2, 2, ())
    assert slots.describe() == "2 trials at a time, 2 threads each (auto: 2 cores)"
    # 16 cores and a 4-point grid: 4 trials of 8 threads, not 16 with 12 idle.
    wide = choose(None, to_run=4, cores=16, memory=64 * GiB)
    assert (wide.jobs, wide.threads) == (4, 8)
    assert choose(None, to_run=32, cores=16, memory=64 * GiB).threads == 2
    one = choose("auto", to_run=1, cores=2, memory=64 * GiB)
    assert (one.jobs, one.threads) == (1, None)  # alone: TensorFlow's own threads


def test_auto_runs_no_more_trials_than_fit_in_memory() -> None:
    slots = choose("auto", to_run=8, cores=8, memory=5 * GiB, data_bytes=GiB)
    assert slots.jobs == 2 and slots.threads == 8  # twice 4, within the 8 cores
    assert "memory for 2 of 8 cores" in slots.describe()
    assert choose("auto", to_run=8, cores=8, memory=GiB // 2).jobs == 1


def test_a_number_of_jobs_is_kept_and_the_cores_shared() -> None:
    assert choose(3, to_run=10, cores=6, memory=GiB).jobs == 3  # asked: memory does not cap
    assert choose(3, to_run=10, cores=6).threads == 4
    assert choose(4, to_run=10, cores=2).threads == 1
    assert choose(2, to_run=10, cores=2, threads=1).threads == 1
    assert choose(2, to_run=10, cores=2, threads=2).threads == 2
    assert choose(1, to_run=10, cores=8).threads is None


def test_gpus_take_the_trials_round_robin_each_seeing_its_own() -> None:
    slots = choose("auto", to_run=10, cores=16, visible_gpus=2)
    assert slots.gpus == ("0", "1") and slots.threads is None
    assert [slots.slot(i).gpu for i in range(slots.jobs)] == ["0", "1"][: slots.jobs]
    asked = choose(4, to_run=10, cores=16, gpus=("1", "3"), visible_gpus=4)
    assert [asked.slot(i).device for i in range(4)] == ["gpu:1", "gpu:3", "gpu:1", "gpu:3"]
    assert choose("auto", to_run=10, cores=4, gpus=(), visible_gpus=2).gpus == ()
    assert Slots(2, 1).slot(1).record(2) == {"jobs": 2, "threads": 1, "device": "cpu"}
    with pytest.raises(SweepError, match="GPU 2 is not visible .this sweep sees 2 GPUs"):
        choose(2, to_run=2, gpus=("0", "2"), visible_gpus=2)
    # explicit jobs spread over every visible GPU too, without CPU thread limits
    spread = choose(4, to_run=4, cores=8, visible_gpus=2)
    assert [spread.slot(i).gpu for i in range(4)] == ["0", "1", "0", "1"] and not spread.threads


def test_trials_that_train_in_this_process_run_one_at_a_time() -> None:
    assert choose("auto", to_run=5, cores=8, can_share=False).jobs == 1
    with pytest.raises(SweepError, match="--jobs 2: these trials train in the sweep's own"):
        choose(2, to_run=5, can_share=False)


@pytest.mark.parametrize(
    ("text", "error"),
    [("0", "at least 1"), ("-2", "at least 1"), ("two", "whole number or auto")],
)
def test_bad_jobs_are_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(SweepError, match=error):
        parse_jobs(text)


def test_jobs_and_gpus_parse() -> None:
    assert parse_jobs("auto") == "auto" and parse_jobs("3") == 3 and parse_jobs(None) is None
    assert (
        parse_gpus("0, 2") == ("0", "2") and parse_gpus("none") == () and parse_gpus(None) is None
    )
    for bad in ("a", "0,0", "1;2"):
        with pytest.raises(SweepError, match="--gpus must list distinct GPU numbers"):
            parse_gpus(bad)
    with pytest.raises(SweepError, match="--threads must be at least 1"):
        choose(2, to_run=2, threads=0)
    assert usable_cores() >= 1


@pytest.mark.parametrize(
    ("filters", "pool_blocks", "kernel"),
    [((8, 16, 32), 2, 3), ((64, 128, 256), 2, 3), ((4, (8, 8), 16), 1, 5), ((6,), 0, 3)],
)
def test_the_layer_plan_counts_the_parameters_keras_builds(filters, pool_blocks, kernel) -> None:
    from models.autoencoder import build_autoencoder
    from models.plan import layer_plan

    config = AutoencoderConfig(filters=filters, pool_blocks=pool_blocks, kernel_size=kernel)
    model = build_autoencoder(config, (28, 28, 1), jit_compile=False)
    assert param_count(config, (28, 28, 1)) == model.count_params()
    planned = [layer.name for layer in layer_plan(config, (28, 28, 1))]
    built = [layer.name for layer in model.layers if "_bn" not in layer.name][1:]  # no Input
    assert planned == built


def test_cost_grows_with_filters_kernel_images_and_epochs() -> None:
    def cost(**changes) -> float:
        base = {"filters": (8, 16), "pool_blocks": 1, "kernel_size": 3, "epochs": 2}
        return training_cost(AutoencoderConfig(**{**base, **changes}), (28, 28, 1), 100)

    small = cost()
    assert cost(filters=(16, 32)) > small and cost(kernel_size=5) > small
    assert cost(epochs=4) == 2 * small
    assert cost(pool_blocks=0) > small  # no pooling: every conv at full size
    config = AutoencoderConfig(filters=(8,), pool_blocks=0, kernel_size=3)
    # encoder conv 1->8, its mirror 8->8, the reconstruction 8->1: 28x28 outputs, 3x3 kernels
    assert multiply_adds(config, (28, 28, 1)) == 28 * 28 * 9 * (1 * 8 + 8 * 8 + 8 * 1)


def test_grid_points_start_most_expensive_first(tiny_space: Path, idx_files) -> None:
    space = load_space(tiny_space)
    split, _ = load_split(space, get_profile("quick"), find_source(files=idx_files), 0)
    order = grid_order(space, get_profile("quick"), split)
    assert [space.config_for(space.decode(p)).filters for p in order] == [(8, 8), (4, 8), (2, 4)]
    # equal or unknown costs keep the file's order
    points = [{"x": 1}, {"x": 2}, {"x": 3}]
    assert by_cost(points, lambda p: 1.0) == tuple(points)
    assert by_cost(points, lambda p: None if p["x"] == 2 else 1.0) == tuple(points)
    assert by_cost(points, lambda p: float(p["x"] % 3)) == ({"x": 2}, {"x": 1}, {"x": 3})


class SlowFake:
    """A fake objective that takes `seconds`, counting how many run at once and in what order
    the points start; fails for filter configs listed in `fail`."""

    def __init__(self, seconds: float = 0.3, fail: set[str] | None = None) -> None:
        self.seconds, self.fail = seconds, fail or set()
        self.started: list[str] = []
        self.now = self.most = 0
        self.lock = threading.Lock()
        self.contexts: list = []

    def factory(self, ctx):
        self.contexts.append(ctx)

        def objective(trial: optuna.Trial) -> float:
            overrides = ctx.space.suggest(trial)
            key = str(ctx.space.config_for(overrides).filters)
            with self.lock:
                self.started.append(key)
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(self.seconds)
                if key in self.fail:
                    raise RuntimeError(f"boom for {key}")
                return len(self.started) / 100
            finally:
                with self.lock:
                    self.now -= 1

        return objective


@pytest.fixture
def slots_env(tmp_path: Path, idx_files, monkeypatch):
    """run_sweep through the real scheduler with N slots; the objective faked (no Keras), so
    no trial process is started."""
    out = tmp_path / "out"
    out.mkdir()
    tracker = Tracker(f"sqlite:///{out / 'mlflow.db'}", artifact_root=out / "art")
    source = find_source(files=idx_files)
    monkeypatch.setattr(sweep.worker, "start_server", lambda: None)

    def run(space, fake, **kwargs):
        monkeypatch.setattr(sweep.run, "make_objective", fake.factory)
        printed = io.StringIO()
        with lines_to(printed):
            study = run_sweep(
                space, get_profile("quick"), source, default_storage(out), tracker, **kwargs
            )
        return study, printed.getvalue()

    return run, tracker


def grid_space(tmp_path: Path, points: int, budget: int | None = None) -> Path:
    values = ", ".join(f"[{2 + i}, {4 + i}]" for i in range(points))
    path = tmp_path / "grid.yaml"
    path.write_text(
        "study: grid\nbase: {filters: [2, 4], pool_blocks: 2, epochs: 1}\n"
        f"params:\n  filters:\n    values: [{values}]\n"
        + (f"n_trials: {budget}\n" if budget else "")
    )
    return path


def test_n_slots_run_at_once_hold_the_grid_budget_and_never_repeat_a_point(
    slots_env, tmp_path: Path
) -> None:
    run, tracker = slots_env
    space = load_space(grid_space(tmp_path, points=7))
    fake = SlowFake()
    study, printed = run(space, fake, jobs=3, n_trials=5)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == 5 and len(done) == 5  # no overshoot with 3 slots
    assert len({t.params["filters"] for t in done}) == 5  # no point twice
    assert fake.most == 3  # three at once, never more
    assert "Slots: 3 trials at a time" in printed
    # most expensive (biggest filters) first
    assert fake.started[:3] == ["(8, 10)", "(7, 9)", "(6, 8)"]
    workers = {t.user_attrs["worker"].rsplit("/", 1)[1] for t in study.trials}
    assert workers == {"0", "1", "2"}
    assert {c.slot.index for c in fake.contexts} == {0, 1, 2}
    parent = tracker.client.search_runs(
        [tracker.client.get_experiment_by_name("grid").experiment_id], "tags.`sweep.role`='study'"
    )[0]
    assert parent.data.tags["sweep.jobs"] == "3" and parent.info.status == "FINISHED"

    study, printed = run(space, fake, jobs=3)  # the rest of the grid, then nothing more
    assert len(study.trials) == 7 and len({t.params["filters"] for t in study.trials}) == 7
    study, printed = run(space, fake, jobs=3)
    assert len(study.trials) == 7 and "7 of 7 trials done, 0 to run" in printed


def test_slots_hold_a_sampled_budget_with_failures_and_stop_together(
    slots_env, tmp_path: Path
) -> None:
    run, _ = slots_env
    path = tmp_path / "random.yaml"
    path.write_text(
        "study: random\nbase: {filters: [2, 4], pool_blocks: 2, epochs: 1}\n"
        "params:\n  filters:\n    values: [[2, 4], [4, 8], [8, 8]]\n"
        "sampler: {name: random, seed: 1}\nn_trials: 8\n"
    )
    space = load_space(path)
    fake = SlowFake(seconds=0.1, fail={"(2, 4)"})
    study, _ = run(space, fake, jobs=3)
    states = [t.state for t in study.trials]
    # the run starts at most the 8 trials its budget had left; failures do not count as done
    assert len(states) == 8 and TrialState.RUNNING not in states
    failed = sum(s == TrialState.FAIL for s in states)
    assert (
        failed == fake.started.count("(2, 4)") and failed + states.count(TrialState.COMPLETE) == 8
    )

    stops: list[int] = []

    def stop_at_first(study: optuna.Study, trial) -> None:
        stops.append(trial.number)
        study.stop()

    before = len(study.trials)
    study, _ = run(space, SlowFake(seconds=0.2), jobs=2, callbacks=[stop_at_first])
    # study.stop() from one slot: each slot ends after the trial it is running
    assert 1 <= len(study.trials) - before <= 2


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--jobs", "0"], "--jobs must be at least 1 (or auto), got 0"),
        (["--jobs", "many"], "--jobs must be a whole number or auto, got 'many'"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--gpus", "0,x"], "--gpus must list distinct GPU numbers"),
        (["--jobs", "2", "--in-process"], "--jobs 2: these trials train in the sweep's own"),
        (["--jobs", "2", "--backend", "keras-tuner"], "--jobs 2: these trials train in"),
    ],
)
def test_bad_slot_flags_exit_2_in_one_line_before_anything_is_recorded(
    tmp_path: Path, tiny_space: Path, idx_args: list[str], capsys, flags, error
) -> None:
    from sweep.cli import main

    out = tmp_path / "out"
    assert main(["--output", str(out), "run", str(tiny_space), *idx_args, *flags]) == 2
    printed = capsys.readouterr()
    assert error in printed.err and len(printed.err.strip().splitlines()) == 1, printed.err
    assert not (out / "optuna.db").exists() and not (out / "mlflow.db").exists()
