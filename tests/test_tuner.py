"""The keras-tuner backend: the space's translation, searches driven by a fake recipe through
the same tuner code (no Keras), and end to end through the CLI on generated images."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

import sweep.search
from sweep.cli import main
from sweep.data import find_source
from sweep.errors import SweepError
from sweep.profiles import get_profile
from sweep.search import describe, epochs_spent, run_search, search_trials, summary
from sweep.space_file import load_space
from sweep.tracking import Tracker
from sweep.tuner import check_space, hyperparameters, project_dir, stored_params, study_name
from tests.conftest import SPACES, lines_to

RANGES = """
study: ranges
base: {filters: [4, 8], epochs: 3, patience: 5}
params:
  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: {low: 16, high: 256, log: true}
  kernel_size: {low: 2, high: 6, step: 2}
  patience: {low: 1, high: 4}
sampler: {name: tpe, seed: 0}
n_trials: 3
"""


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def runs_of(out: Path, study: str):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "study"]
    trials = sorted(
        (r for r in runs if r.data.tags.get("sweep.role") == "trial"),
        key=lambda r: int(r.data.tags["optuna.trial_number"]),
    )
    return client, parents, trials


# --- translation -----------------------------------------------------------------------------


def test_ranges_become_int_and_float_with_log_sampling(tmp_path: Path) -> None:
    hp = {h.name: h for h in hyperparameters(load_space(write_space(tmp_path, RANGES))).space}
    lr, batch, kernel, patience = (
        hp[k] for k in ("learning_rate", "batch_size", "kernel_size", "patience")
    )
    assert type(lr).__name__ == "Float" and lr.sampling == "log"
    assert (lr.min_value, lr.max_value, lr.step) == (1e-4, 1e-2, None)
    assert type(batch).__name__ == "Int" and batch.sampling == "log" and batch.step is None
    assert type(kernel).__name__ == "Int" and kernel.sampling == "linear"
    assert list(kernel.values) == [2, 4, 6]
    assert type(patience).__name__ == "Int" and list(patience.values) == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["filters", "depth", "joint", "lr"])
def test_choices_round_trip_to_the_configs_of_the_optuna_path(name: str) -> None:
    """Every combination of choices (with sampled ranges) keras-tuner can pick decodes to the
    config the Optuna path builds for the same labels: filter lists and depth groups too."""
    space = load_space(SPACES / f"{name}.yaml")
    hps = hyperparameters(space)
    choices = {h.name: list(h.values) for h in hps.space if type(h).__name__ == "Choice"}
    assert choices == {p.name: list(p.labels) for p in space.params if not p.is_range}
    study = optuna.create_study()
    for i, combo in enumerate(itertools.product(*choices.values())):
        values = {h.name: h.random_sample(i) for h in hps.space if h.name not in choices}
        values.update(zip(choices, combo, strict=True))
        stored = stored_params(space, {**values, "tuner/epochs": 2})
        study.enqueue_trial(stored)
        trial = study.ask()
        optuna_config = space.config_for(space.suggest(trial))
        assert trial.params == stored
        assert space.config_for(space.decode(stored)) == optuna_config
        study.tell(trial, 0.0)
    assert len(study.trials) == math.prod(len(v) for v in choices.values())


@pytest.mark.parametrize(
    ("space", "tuner", "message"),
    [
        (SPACES / "classifier.yaml", "hyperband", "does not support classifier spaces"),
        (SPACES / "joint.yaml", "grid", "params.learning_rate: --tuner grid needs a list"),
    ],
)
def test_what_the_backend_cannot_run_is_a_one_line_error(space, tuner, message, capsys) -> None:
    with pytest.raises(SweepError, match=message):
        check_space(load_space(space), tuner)
    code = main(["run", str(space), "--backend", "keras-tuner", "--tuner", tuner])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


# --- searches with a fake recipe ---------------------------------------------------------------


class FakeRecipe:
    """Scores a trial from its config without Keras, 'training' the epochs it is asked for;
    raises for the filters in `fail`, and is interrupted (Ctrl-C) at the kernel `interrupt`."""

    def __init__(self, fail: set[str] | None = None, interrupt: int | None = None) -> None:
        self.fail, self.interrupt, self.calls = fail or set(), interrupt, []

    def factory(self, ctx):
        def recipe(trial) -> float:
            config = ctx.profile.apply(ctx.space.config_for(ctx.space.decode(trial.params)))
            trial.set_user_attr(
                "epochs_trained", (trial.epochs or config.epochs) - trial.initial_epoch
            )
            self.calls.append(trial)
            if config.kernel_size == self.interrupt:
                raise KeyboardInterrupt
            if str(config.filters) in self.fail:
                raise RuntimeError(f"boom for {config.filters}")
            return config.learning_rate * (1 + config.kernel_size) / (trial.epochs or 1)

        return recipe


@pytest.fixture
def search(tmp_path: Path, idx_files, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    tracker = Tracker(f"sqlite:///{out / 'mlflow.db'}", artifact_root=out / "art")
    source = find_source(files=idx_files)

    def run(space, fake, progress_stream=None, **kwargs):
        monkeypatch.setattr(sweep.search, "make_recipe", fake.factory)
        with lines_to(progress_stream or io.StringIO()):
            return run_search(space, get_profile("quick"), source, tracker, out, **kwargs)

    return run, tracker, out


def test_grid_runs_optunas_grid_in_order_and_a_rerun_continues(search, tiny_space: Path) -> None:
    run, tracker, out = search
    space = load_space(tiny_space)
    fake = FakeRecipe()
    assert len(run(space, fake, tuner="grid", n_trials=2)) == 2
    records = run(space, fake, tuner="grid")
    assert [r.params for r in records] == space.grid_points()
    assert [r.state for r in records] == ["complete"] * 3 and len(fake.calls) == 3
    assert len(run(space, fake, tuner="grid")) == 3 and len(fake.calls) == 3
    assert search_trials(out, space, "grid", tracker) == records
    _, parents, _ = runs_of(out, "tiny-kt-grid")
    assert len(parents) == 1
    assert (
        parents[0].data.tags["backend"] == "keras-tuner" and parents[0].data.tags["tuner"] == "grid"
    )
    assert parents[0].data.metrics["n_complete"] == 3
    assert parents[0].data.metrics["epochs_trained"] == 6


@pytest.mark.parametrize(
    ("epochs", "trials", "spent"),
    [
        # max_epochs 3: 3 trials of 1 epoch, the best continued to 3 (2 more), 2 trials of 3
        (3, [(0, 1), (0, 1), (0, 1), (1, 2), (0, 3), (0, 3)], 11),
        # max_epochs 6: 5 of 2 epochs, the best two continued to 6 (4 more each), 3 of 6
        (6, [(0, 2)] * 5 + [(2, 4)] * 2 + [(0, 6)] * 3, 36),
    ],
)
def test_hyperband_epochs_accounting(search, tmp_path: Path, epochs, trials, spent) -> None:
    run, tracker, out = search
    space = load_space(write_space(tmp_path, RANGES.replace("epochs: 3", f"epochs: {epochs}")))
    fake = FakeRecipe()
    assert len(run(space, fake, n_trials=4)) == 4
    records = run(space, fake)
    assert [(r.initial_epoch, r.epochs_trained) for r in records] == trials
    assert epochs_spent(records) == spent == epochs_spent(search_trials(out, space, "hyperband"))
    first_round = [r for r in records if r.number < trials.count(trials[0])]
    best = min(first_round, key=lambda r: r.best_val_loss)
    continued = next(r for r in records if r.initial_epoch > 0)
    assert continued.continues == best.number and continued.params == best.params
    checkpoints = {call.number: call.checkpoint for call in fake.calls}
    start = next(call.start_from for call in fake.calls if call.number == continued.number)
    assert start == checkpoints[best.number]
    assert start.parent.parent == project_dir(out, space, "hyperband")
    _, parents, _ = runs_of(out, study_name(space, "hyperband"))
    assert parents[0].data.metrics["epochs_trained"] == spent


@pytest.mark.parametrize(("precision", "warned"), [("mixed_bfloat16", True), ("float32", False)])
def test_the_precision_note_is_said_here_too(
    search, tiny_space: Path, monkeypatch, precision: str, warned: bool
) -> None:
    import sweep.tf_env
    from sweep.space_file import apply_overrides

    run, _, _ = search
    monkeypatch.setattr(sweep.tf_env, "has_gpu", lambda: False)
    monkeypatch.setattr(sweep.tf_env, "cpu_flags", lambda: {"avx2", "avx512f"})  # no bf16
    stream = io.StringIO()
    space = apply_overrides(load_space(tiny_space), {"precision": precision})
    records = run(space, FakeRecipe(), tuner="grid", progress_stream=stream)
    notes = [line for line in stream.getvalue().splitlines() if line.startswith("Note:")]
    assert len(notes) == (1 if warned else 0)
    if warned:
        assert "mixed_bfloat16" in notes[0] and "float32" in notes[0]
    assert [r.state for r in records] == ["complete"] * 3


@pytest.mark.parametrize("tuner", ["bayesian", "random"])
def test_bayesian_and_random_search_the_ranges(search, tmp_path: Path, tuner: str) -> None:
    run, _, _ = search
    space = load_space(write_space(tmp_path, RANGES))
    records = run(space, FakeRecipe(), tuner=tuner)
    assert len(records) == 3 and {r.state for r in records} == {"complete"}
    assert all(r.in_space for r in records)
    for record in records:
        assert 1e-4 <= record.params["learning_rate"] <= 1e-2
        assert record.params["kernel_size"] in (2, 4, 6)


def test_failed_trials_count_and_the_search_goes_on(search) -> None:
    """Three failures in a row (keras-tuner's default limit) do not stop the search."""
    run, _, out = search
    space = load_space(SPACES / "filters.yaml")
    fail = {"(8, 16, 32)", "(16, 32, 64)", "(32, 64, 128)"}
    records = run(space, FakeRecipe(fail=fail), tuner="grid")
    assert [r.state for r in records] == ["failed", "failed", "failed", "complete"]
    assert [r.best_val_loss is None for r in records] == [True, True, True, False]
    assert epochs_spent(records) == 4 * 6
    _, parents, _ = runs_of(out, "filters-kt-grid")
    assert parents[0].data.metrics["n_failed"] == 3
    assert parents[0].data.tags["best_trial"] == "3"


KERNELS = """
study: edited
base: {filters: [4, 8], pool_blocks: 2, batch_size: 64, epochs: 2}
params:
  kernel_size: {values: KERNELS}
"""


def kernel_space(tmp_path: Path, kernels: list[int]):
    return load_space(write_space(tmp_path, KERNELS.replace("KERNELS", str(kernels))))


def kernels(trials) -> list[int]:
    return [t.params["kernel_size"] for t in trials]


@pytest.mark.parametrize(
    ("old", "new", "trained"),
    [
        ([2, 3], [3, 5], [5]),
        ([3, 5], [2, 3, 5], [2]),  # a new first value: keras-tuner's own grid never reaches it
        ([2, 3], [5, 7], [5, 7]),  # no old point left
    ],
)
def test_an_edited_grid_runs_its_new_points_and_keeps_the_old_ones(
    search, tmp_path: Path, old, new, trained
) -> None:
    run, tracker, out = search
    fake = FakeRecipe()
    assert kernels(run(kernel_space(tmp_path, old), fake, tuner="grid")) == old
    folder = project_dir(out, kernel_space(tmp_path, old), "grid")
    before = {f: f.read_bytes() for f in folder.glob("trial_*/trial.json")}
    space, stream = kernel_space(tmp_path, new), io.StringIO()
    records = run(space, fake, tuner="grid", progress_stream=stream)
    kept = len([k for k in old if k not in new])
    assert kernels(fake.calls) == old + trained
    assert kernels(records) == old + trained
    assert [r.in_space for r in records] == [k in new for k in old] + [True] * len(trained)
    assert {f: f.read_bytes() for f in before} == before
    printed = stream.getvalue()
    assert f"{len(new) - len(trained)} of {len(new)} trials done, {len(trained)} to run" in printed
    note = {0: "", 1: "; 1 trial of a point", 2: "; 2 trials of points"}[kept]
    assert ("no longer in the space are kept" in printed) == (kept == 2)
    assert ("1 trial of a point no longer in the space is kept" in printed) == (kept == 1)

    again = io.StringIO()
    assert run(space, fake, tuner="grid", progress_stream=again) == records
    assert "Nothing left to run" in again.getvalue() and len(fake.calls) == len(old + trained)
    assert search_trials(out, space, "grid", tracker) == records

    best = min((r for r in records if r.in_space), key=lambda r: r.best_val_loss)
    assert best.params["kernel_size"] == min(new)
    facts = summary(records, space)
    assert facts["n_complete"] == len(new) and facts["n_outside_space"] == kept
    assert facts["best_trial"] == str(best.number)
    described = describe(records, space, "grid")
    assert f"(trial {best.number}: kernel_size={min(new)}){note}" in described
    assert ("no longer in the space" in described) == bool(kept)
    _, parents, _ = runs_of(out, "edited-kt-grid")
    assert len(parents) == 1
    assert parents[0].data.metrics["n_outside_space"] == kept
    assert parents[0].data.tags["best_trial"] == str(best.number)


def test_a_failed_grid_point_is_tried_again_on_a_rerun(search) -> None:
    """As the Optuna path's grid: only a complete trial settles a point."""
    run, _, _ = search
    space = load_space(SPACES / "filters.yaml")
    fail = {"(8, 16, 32)", "(16, 32, 64)"}
    assert [r.state for r in run(space, FakeRecipe(fail=fail), tuner="grid")][:2] == ["failed"] * 2
    fake, stream = FakeRecipe(), io.StringIO()
    records = run(space, fake, tuner="grid", progress_stream=stream)
    assert "2 of 4 trials done, 2 to run" in stream.getvalue()
    assert [c.params for c in fake.calls] == space.grid_points()[:2]
    assert [r.state for r in records] == ["failed"] * 2 + ["complete"] * 4
    assert run(space, fake, tuner="grid") == records and len(fake.calls) == 2


@pytest.mark.parametrize(("new", "trained"), [([2, 5], [5]), ([3, 5], [3, 5])])
def test_an_interrupted_trial_is_retried_only_if_its_point_is_still_in_the_space(
    search, tmp_path: Path, new, trained
) -> None:
    run, _, _ = search
    with pytest.raises(KeyboardInterrupt):
        run(kernel_space(tmp_path, [2, 3]), FakeRecipe(interrupt=3), tuner="grid")
    fake = FakeRecipe()
    records = run(kernel_space(tmp_path, new), fake, tuner="grid")
    assert kernels(fake.calls) == trained
    interrupted = next(r for r in records if r.number == 1)
    assert interrupted.params["kernel_size"] == 3
    assert (interrupted.state, interrupted.in_space) == (
        ("complete", True) if 3 in new else ("running", False)
    )
    assert sorted(kernels(r for r in records if r.state == "complete" and r.in_space)) == new
    assert [c.number for c in fake.calls] == ([1, 2] if 3 in new else [2])


def test_other_tuners_refuse_an_edited_space_naming_the_fix(search, tmp_path: Path) -> None:
    run, _, out = search
    run(load_space(write_space(tmp_path, RANGES)), FakeRecipe(), tuner="random", n_trials=1)
    edited = load_space(write_space(tmp_path, RANGES.replace("high: 6", "high: 8")))
    with pytest.raises(SweepError) as error:
        run(edited, FakeRecipe(), tuner="random")
    message = str(error.value)
    assert "cannot continue a random search over a changed space" in message
    assert message.endswith("give the study a new name or delete that folder")
    assert str(project_dir(out, edited, "random")) in message and "\n" not in message


# --- end to end: real training through the CLI -------------------------------------------------


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.mark.slow
def test_grid_over_filters_logs_a_run_per_point_and_failed_points_end_failed(
    tmp_path: Path, idx_args, monkeypatch, capsys
) -> None:
    """The first point's loss turns NaN (training.Diverged), the last one's build raises (as
    out of memory would); the points between train, and each point has its MLflow run."""
    import models.autoencoder as autoencoder
    from sweep.tf_env import import_keras_quietly

    keras = import_keras_quietly()
    real_build = autoencoder.build_autoencoder

    def build(config, input_shape=(28, 28, 1), **options):
        if config.filters == (64, 128, 256):
            raise RuntimeError("OOM when allocating tensor")
        model = real_build(config, input_shape, **options)
        if config.filters == (8, 16, 32):
            nan = float("nan")
            model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(y - p) * nan)
        return model

    monkeypatch.setattr(autoencoder, "build_autoencoder", build)
    out = tmp_path / "out"
    shrink = ["--set", "epochs=2", "train_size=48", "val_size=24"]
    code = run_cli(
        "--output",
        out,
        "run",
        SPACES / "filters.yaml",
        "--backend",
        "keras-tuner",
        "--tuner",
        "grid",
        *shrink,
        *idx_args,
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "[4/4] trial 3: filters=[64, 128, 256]" in printed and "epoch   2/2" in printed
    assert "-> failed: loss became nan at epoch 1" in printed
    assert "-> failed: RuntimeError: OOM when allocating tensor" in printed
    assert "2 complete, 0 pruned, 2 failed" in printed

    client, parents, trials = runs_of(out, "filters-kt-grid")
    assert len(parents) == 1 and len(trials) == 4
    filters = load_space(SPACES / "filters.yaml").grid()["filters"]
    assert [t.data.params["filters"] for t in trials] == filters
    assert [t.info.status for t in trials] == ["FAILED", "FINISHED", "FINISHED", "FAILED"]
    assert [t.data.tags["sweep.state"] for t in trials] == [
        "failed",
        "complete",
        "complete",
        "failed",
    ]
    assert "nan" in trials[0].data.tags["sweep.fail_reason"]
    assert "OOM" in trials[3].data.tags["sweep.fail_reason"]
    assert [t.data.metrics["epochs_trained"] for t in trials] == [0, 2, 2, 0]
    for run in trials:
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["backend"] == "keras-tuner" and tags["tuner"] == "grid"
        assert params["backend"] == "keras-tuner" and params["tuner"] == "grid"
        assert params["train_images"] == "48" and params["epochs"] == "2"
    for run in trials[1:3]:
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == [1, 2]
        assert run.data.metrics["best_val_loss"] == pytest.approx(min(m.value for m in history))
        assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
    best = min(t.data.metrics["best_val_loss"] for t in trials[1:3])
    assert parents[0].data.metrics["best_val_loss"] == pytest.approx(best)
    assert parents[0].data.metrics["n_failed"] == 2
    assert parents[0].data.tags["backend"] == "keras-tuner"
    records = search_trials(out, load_space(SPACES / "filters.yaml"), "grid")
    assert [r.state for r in records] == ["failed", "complete", "complete", "failed"]


@pytest.mark.slow
def test_a_hyperband_continuation_trains_on_from_the_checkpoint(
    tmp_path: Path, idx_files, monkeypatch
) -> None:
    """The recipe alone (the tuner's wiring is tested above): 1 epoch, then 2 more from its
    best weights, logged as epochs 2 and 3."""
    from sweep.context import Progress, TrialContext
    from sweep.data import subset_and_split
    from sweep.recipe import train
    from sweep.tf_env import import_keras_quietly
    from sweep.tuner import job_for

    keras = import_keras_quietly()
    loaded: list[Path] = []
    real_load = keras.Model.load_weights

    def load_weights(model, path, *args, **kwargs):
        loaded.append(Path(path))
        return real_load(model, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "load_weights", load_weights)
    space = load_space(write_space(tmp_path, RANGES.replace("[4, 8]", "[2, 4]")))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=tmp_path / "art")
    split = subset_and_split(*find_source(files=idx_files).training())
    parent = tracker.study_run("hb", {})
    run_params = {"study": "hb", "seed": 0, "backend": "keras-tuner", "tuner": "hyperband"}
    printed = io.StringIO()
    profile = get_profile("quick")
    ctx = TrialContext(
        space, profile, split, tracker, parent, run_params, Progress(2), isolate=False
    )
    params = {"learning_rate": 3e-3, "batch_size": 64, "kernel_size": 2, "patience": 4}
    tags = {"backend": "keras-tuner", "tuner": "hyperband"}

    def checkpoint(trial_id: str) -> str:
        return str(tmp_path / f"{trial_id}.weights.h5")

    facts: dict[str, dict] = {"0": {}, "1": {}}
    first_values = {**params, "tuner/epochs": 1, "tuner/initial_epoch": 0}
    first = job_for("0", first_values, space, facts["0"], tags, checkpoint)
    second_values = {**params, "tuner/epochs": 3, "tuner/initial_epoch": 1, "tuner/trial_id": "0"}
    second = job_for("1", second_values, space, facts["1"], tags, checkpoint)
    with lines_to(printed):
        train(ctx, first)
        assert first.checkpoint.exists() and loaded == []
        train(ctx, second)
    assert loaded == [first.checkpoint] and second.start_from == first.checkpoint
    assert "epochs=1->3  continues=trial 0" in printed.getvalue()
    assert "epoch   3/3" in printed.getvalue()
    client = tracker.client
    run = client.get_run(facts["1"]["mlflow_run_id"])
    assert run.data.params["tuner/initial_epoch"] == "1" and run.data.params["epochs"] == "3"
    assert run.data.metrics["epochs_trained"] == 2 and run.data.tags["backend"] == "keras-tuner"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [2, 3]
