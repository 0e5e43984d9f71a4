"""keras-tuner backend: a SearchSpace -> keras-tuner HyperParameters, one of its tuners, and
the project's trial recipe, recorded in MLflow as the Optuna path records it.

This is the one module that translates a space into keras-tuner (space.py translates it into
Optuna). A value keras-tuner cannot hold (a filter list, a group of keys) is a choice between
the labels Optuna stores, and space.py decodes the labels into config values. The oracle
decides what to try; `make_trial` trains one trial; the tuner's project folder
(<output>/keras-tuner/<study>) lets a rerun continue a search. A grid continues over an edited
space: trials of points the space no longer holds are kept, and neither block a point nor count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweep.errors import SweepError
from sweep.points import OUTSIDE_METRIC, kept_note
from sweep.space import Param, SearchSpace, format_value, nothing_left

if TYPE_CHECKING:
    import keras_tuner
    import optuna

    from sweep.data import DataSource, Split
    from sweep.profiles import Profile
    from sweep.study import Progress
    from sweep.tracking import Tracker, TrialRun

BACKEND = "keras-tuner"
TUNERS = ("hyperband", "bayesian", "random", "grid")
HYPERBAND_FACTOR = 3
EPOCHS_METRIC = "epochs_trained"
# What Hyperband adds to a trial's values: the epochs to reach, the epoch it starts from, and
# (when it continues an earlier trial) that trial's id; logged as MLflow params.
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/trial_id", "tuner/bracket",
                  "tuner/round")  # fmt: skip
STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed"}


def _keras_tuner():
    """Import keras-tuner, after Keras is imported quietly (it imports TensorFlow)."""
    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    import keras_tuner

    return keras_tuner


def study_name(space: SearchSpace, tuner: str) -> str:
    """The search's MLflow experiment and project folder, apart from the space's Optuna study
    so that the two backends' runs never share a parent run."""
    return f"{space.study}-kt-{tuner}"


def project_dir(output: Path, space: SearchSpace, tuner: str) -> Path:
    return output / "keras-tuner" / study_name(space, tuner)


def check_space(space: SearchSpace, tuner: str) -> None:
    """Raise SweepError for what this backend cannot run, before anything is trained."""
    if space.kind != "autoencoder":
        raise SweepError(
            f"{space.path}: the keras-tuner backend does not support {space.kind} spaces; "
            "use --backend optuna"
        )
    if tuner not in TUNERS:
        raise SweepError(f"unknown tuner {tuner!r}; use one of {', '.join(TUNERS)}")
    for p in space.params:
        if tuner == "grid" and p.is_range and (p.log or (p.step is None and not _is_int(p))):
            raise SweepError(
                f"{space.path}: params.{p.name}: --tuner grid needs a list of values or a "
                "linear range with a step"
            )
        if tuner == "hyperband" and "epochs" in p.keys:
            raise SweepError(
                f"{space.path}: params.{p.name}: hyperband sets each trial's epochs itself; "
                "use another --tuner or drop the parameter"
            )


def _is_int(p: Param) -> bool:
    """Whether a range is of integers (as Param.suggest decides for Optuna)."""
    return isinstance(p.low, int) and isinstance(p.high, int) and not isinstance(p.step, float)


def hyperparameters(space: SearchSpace) -> keras_tuner.HyperParameters:
    """The space as keras-tuner HyperParameters: a range is an Int or Float (log sampling
    where the file says log), a value list a Choice of the labels Optuna stores (strings for
    filter lists and groups; config keys take one type, so the labels have one)."""
    hp = _keras_tuner().HyperParameters()
    for p in space.params:
        sampling = "log" if p.log else "linear"
        if not p.is_range:
            hp.Choice(p.name, list(p.labels))
        elif _is_int(p):
            hp.Int(p.name, p.low, p.high, step=None if p.log else p.step, sampling=sampling)
        else:
            step = None if p.step is None else float(p.step)
            hp.Float(p.name, float(p.low), float(p.high), step=step, sampling=sampling)
    return hp


def stored_params(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's keras-tuner values -> the params Optuna would store: the same values, since a
    Choice holds Optuna's labels (space.decode checks them); Hyperband's own keys dropped."""
    return {p.name: values[p.name] for p in space.params if p.name in values}


def _point(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's point: its values without Hyperband's keys (a parameter the space has dropped
    since stays, so that the point is not taken for one of the space's)."""
    return {k: v for k, v in values.items() if k not in HYPERBAND_KEYS}


def _key(point: dict[str, Any]) -> tuple:
    return tuple(sorted(point.items()))


def in_space(hps: keras_tuner.HyperParameters, values: dict[str, Any]) -> bool:
    """Whether a trial's point is one of the space's as the file is now: the same parameters,
    each at a value it can take (on its grid, where it has one)."""
    point, space = _point(values), {hp.name: hp for hp in hps.space}
    return point.keys() == space.keys() and all(_holds(space[k], v) for k, v in point.items())


def _holds(hp: Any, value: Any) -> bool:
    """Whether a hyperparameter takes the value: one of a choice's, or a number in the range (on
    its step, where it has a linear one)."""
    if not hasattr(hp, "min_value"):
        return value in hp.values
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not hp.min_value <= value <= hp.max_value:
        return False
    return hp.step is None or hp.sampling != "linear" or value in hp.values


@dataclass(frozen=True)
class TunerTrial:
    """One keras-tuner trial as the recipe sees it. `params` are stored as Optuna stores them
    (space.decode turns them into config overrides); Hyperband's continuations start from
    `start_from` (the best weights of the trial they continue) at `initial_epoch`."""

    number: int
    trial_id: str
    params: dict[str, Any]
    tuner_values: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    start_from: Path | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def initial_epoch(self) -> int:
        return int(self.tuner_values.get("tuner/initial_epoch", 0))

    @property
    def epochs(self) -> int | None:
        """The epoch Hyperband trains to (counting the continued trial's); None: the config's."""
        return self.tuner_values.get("tuner/epochs")

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


@dataclass(frozen=True)
class TrialRecord:
    """One finished (or interrupted) keras-tuner trial, for summaries and budget comparisons."""

    number: int
    params: dict[str, Any]
    state: str
    best_val_loss: float | None
    epochs_trained: int
    initial_epoch: int = 0
    continues: int | None = None
    run_id: str | None = None
    in_space: bool = True


class _RecipeRunner:
    """Mixed into a keras-tuner tuner: each trial the oracle creates runs the project's recipe.
    A trial that raises is a FAILED trial (keras-tuner's FailedTrialError: no retry), and
    the epochs it trained are kept in the trial as the metric `epochs_trained`."""

    space: SearchSpace
    recipe: Callable[[TunerTrial], float]
    keeps_checkpoints: bool

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        job = self.as_job(trial)
        try:
            best = self.recipe(job)
        except Exception as exc:
            reason = job.user_attrs.get("fail_reason") or f"{type(exc).__name__}: {exc}"
            raise _keras_tuner().errors.FailedTrialError(reason) from exc
        finally:
            _add_epochs(trial, job.user_attrs.get(EPOCHS_METRIC, 0))
        return {"val_loss": best}

    def as_job(self, trial: Any) -> TunerTrial:
        values = trial.hyperparameters.values
        continues = values.get("tuner/trial_id")
        checkpoint = self._get_checkpoint_fname  # type: ignore[attr-defined]
        return TunerTrial(
            number=int(trial.trial_id),
            trial_id=trial.trial_id,
            params=stored_params(self.space, values),
            tuner_values={k: values[k] for k in HYPERBAND_KEYS if k in values},
            checkpoint=Path(checkpoint(trial.trial_id)) if self.keeps_checkpoints else None,
            start_from=Path(checkpoint(continues)) if continues else None,
        )


class _GridWalk:
    """Mixed into keras-tuner's Oracle: the grid of the space as the file is now, in keras-tuner's
    order (first values first, the last parameter fastest), each point tried once a search. A
    point with a complete trial is never run again (a failed one is, on a rerun, as the Optuna
    path's grid does); trials of points the space no longer holds are kept but neither block a
    point nor use up the budget. keras-tuner 1.4.8's grid oracle only walks on from the points
    it tried, so a reloaded or edited grid could not reach every point."""

    hyperparameters: keras_tuner.HyperParameters
    trials: dict[str, Any]
    max_trials: int

    def __init__(self, *args: Any, budget: int, **kwargs: Any) -> None:
        super().__init__(*args, max_trials=budget, **kwargs)  # type: ignore[call-arg]
        self.budget = budget
        self._taken: set[tuple] = set()

    def reload(self) -> None:
        """Continue the saved search over the space's hyperparameters (the saved ones may be an
        earlier version of the file's); an interrupted trial is retried if its point still is
        one of the space's. max_trials is set past what the budget can use (it sizes the trial
        ids); populate_space keeps the budget."""
        current = self.hyperparameters
        super().reload()  # type: ignore[misc]
        self.hyperparameters = current
        retry = [t for t in self._retry_queue if self._in_space(self.trials[t])]
        self._retry_queue = retry
        self._taken = {_key(_point(self.trials[t].hyperparameters.values)) for t in retry}
        self.max_trials = len(self.trials) + max(0, self.budget - len(self.complete_points()))

    def complete_points(self) -> set[tuple]:
        """The space's points that have a complete trial."""
        complete = (t for t in self.trials.values() if t.status == "COMPLETED")
        return {_key(_point(t.hyperparameters.values)) for t in complete if self._in_space(t)}

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """The first point in grid order neither complete nor tried in this search, while the
        budget lasts."""
        taken = self.complete_points() | self._taken
        points = (p for p in self._grid() if _key(p) not in taken)
        point = next(points, None) if len(taken) < self.budget else None
        if point is None:
            return {"status": "STOPPED", "values": None}
        self._taken.add(_key(point))
        return {"status": "RUNNING", "values": point}

    def _in_space(self, trial: Any) -> bool:
        return in_space(self.hyperparameters, trial.hyperparameters.values)

    def _grid(self) -> Iterator[dict[str, Any]]:
        hps = self.hyperparameters.space
        orders = [[hp.default, *(v for v in hp.values if v != hp.default)] for hp in hps]
        for combo in itertools.product(*orders):
            yield {hp.name: value for hp, value in zip(hps, combo, strict=True)}


def _add_epochs(trial: Any, epochs: int) -> None:
    """One observation per run of the trial (a trial interrupted and rerun has two)."""
    runs = trial.metrics.get_history(EPOCHS_METRIC) if trial.metrics.exists(EPOCHS_METRIC) else []
    trial.metrics.update(EPOCHS_METRIC, float(epochs), step=len(runs))


def _epochs(trial: Any) -> int:
    if not trial.metrics.exists(EPOCHS_METRIC):
        return 0
    return int(sum(sum(obs.value) for obs in trial.metrics.get_history(EPOCHS_METRIC)))


def open_tuner(
    space: SearchSpace,
    tuner: str,
    directory: Path,
    *,
    max_epochs: int,
    n_trials: int | None = None,
    seed: int = 0,
) -> keras_tuner.Tuner:
    """The tuner for the space: a new project, or the existing one reloaded to continue.

    Hyperband runs one iteration of its brackets (max_epochs, factor 3), capped at `n_trials`
    if given; the others run `n_trials` (default: the space's). keras-tuner reads seed 0 as
    "no seed", so its oracle gets seed + 1. Failures never stop the search early: the trial
    budget bounds it. Only a grid continues over an edited space (see _GridWalk).
    """
    kt = _keras_tuner()
    check_space(space, tuner)
    space_hp = hyperparameters(space)
    common = {
        "objective": kt.Objective("val_loss", direction="min"),
        "hyperparameters": space_hp,
        "allow_new_entries": False,
        "seed": seed + 1,
        "max_consecutive_failed_trials": None,
    }
    project = {"directory": str(directory.parent), "project_name": directory.name}
    # keras-tuner prints "Reloading Tuner from ..."; run_search says how many trials are done.
    with contextlib.redirect_stdout(io.StringIO()):
        made = _make_tuner(tuner, n_trials or space.n_trials, max_epochs, common, project)
    if tuner == "hyperband" and n_trials:
        made.oracle.max_trials = n_trials
    if made.oracle.hyperparameters.get_config() != space_hp.get_config():
        raise SweepError(
            f"{space.path} changed since the keras-tuner search in {directory} began, and "
            f"keras-tuner cannot continue a {tuner} search over a changed space; give the study "
            "a new name or delete that folder"
        )
    made.oracle.verbose = 0
    made.space, made.keeps_checkpoints = space, tuner == "hyperband"
    return made


def _make_tuner(
    tuner: str, budget: int, max_epochs: int, common: dict[str, Any], project: dict[str, Any]
) -> keras_tuner.Tuner:
    """keras-tuner's tuner running the recipe; a grid is keras-tuner's Tuner with _GridWalk."""
    kt = _keras_tuner()
    if tuner == "grid":
        oracle = type("SweepGridOracle", (_GridWalk, kt.Oracle), {})(budget=budget, **common)
        cls = type("SweepGridSearch", (_RecipeRunner, kt.Tuner), {})
        return cls(oracle=oracle, overwrite=False, **project)
    bases = {
        "hyperband": kt.Hyperband,
        "bayesian": kt.BayesianOptimization,
        "random": kt.RandomSearch,
    }
    options: dict[str, Any] = (
        {"max_epochs": max_epochs, "factor": HYPERBAND_FACTOR}
        if tuner == "hyperband"
        else {"max_trials": budget}
    )
    cls = type(f"Sweep{bases[tuner].__name__}", (_RecipeRunner, bases[tuner]), {})
    return cls(overwrite=False, **common, **options, **project)


def planned_trials(tuner: keras_tuner.Tuner) -> int:
    """The search's trial budget. Hyperband's is what its brackets create (fewer if a small
    space runs out of new points), capped by max_trials where set."""
    oracle = tuner.oracle
    if isinstance(oracle, _GridWalk):
        return oracle.budget
    if not hasattr(oracle, "hyperband_iterations"):
        return oracle.max_trials
    brackets = range(oracle._get_num_brackets())
    n = sum(oracle._get_size(b, r) for b in brackets for r in range(b + 1))
    n *= oracle.hyperband_iterations
    return min(n, oracle.max_trials) if oracle.max_trials else n


def done_trials(tuner: keras_tuner.Tuner) -> int:
    """The budget spent: a grid's points with a complete trial; otherwise every finished trial."""
    oracle = tuner.oracle
    if isinstance(oracle, _GridWalk):
        return len(oracle.complete_points())
    return sum(t.status in STATES for t in oracle.trials.values())


def trial_records(
    trials: Iterable[Any], space: SearchSpace, run_ids: dict[int, str] | None = None
) -> list[TrialRecord]:
    """keras-tuner trials (an oracle's, or loaded from a project) -> records, by number; a
    trial of a point the space no longer holds is kept, with `in_space` False."""
    hps, records = hyperparameters(space), []
    for trial in trials:
        values = trial.hyperparameters.values
        continues = values.get("tuner/trial_id")
        state = STATES.get(trial.status, trial.status.lower())
        records.append(
            TrialRecord(
                number=int(trial.trial_id),
                params=_point(values),
                state=state,
                best_val_loss=float(trial.score) if state == "complete" else None,
                epochs_trained=_epochs(trial),
                initial_epoch=int(values.get("tuner/initial_epoch", 0)),
                continues=int(continues) if continues is not None else None,
                run_id=(run_ids or {}).get(int(trial.trial_id)),
                in_space=in_space(hps, values),
            )
        )
    return sorted(records, key=lambda r: r.number)


def search_trials(
    output: Path, space: SearchSpace, tuner: str, tracker: Tracker | None = None
) -> list[TrialRecord]:
    """The trials of a search, read from its project folder (and, with `tracker`, the MLflow
    run of each): params, state, best val_loss, epochs trained. Trains nothing.

    The budget a search spent is `epochs_spent(search_trials(...))`."""
    trial_class = _keras_tuner().engine.trial.Trial
    folder = project_dir(output, space, tuner)
    files = sorted(folder.glob("trial_*/trial.json"))
    if not files:
        raise SweepError(f"no keras-tuner search in {folder}; run it with --backend keras-tuner")
    run_ids = _run_ids(tracker, study_name(space, tuner)) if tracker else None
    return trial_records((trial_class.load(str(f)) for f in files), space, run_ids)


def epochs_spent(records: Iterable[TrialRecord]) -> int:
    """Epochs trained in all, failed trials and Hyperband's continuations included."""
    return sum(r.epochs_trained for r in records)


def _run_ids(tracker: Tracker, study: str) -> dict[int, str]:
    """Trial number -> its MLflow run (the latest, where a trial ran twice)."""
    from sweep.tracking import ROLE_TAG, TRIAL_TAG

    experiment = tracker.client.get_experiment_by_name(study)
    if experiment is None:
        return {}
    runs = tracker.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'trial'",
        order_by=["attributes.start_time ASC"],
    )
    return {int(r.data.tags[TRIAL_TAG]): r.info.run_id for r in runs}


def as_study(records: list[TrialRecord], space: SearchSpace) -> optuna.Study:
    """The records as an in-memory Optuna study (through space.suggest, so the params are
    Optuna's), so that study.py's summaries describe both backends alike. A trial of a point no
    longer in the space (its params may not decode) is an empty trial left running: the numbers
    stay keras-tuner's, and the counts and the best leave it out."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(
        direction=space.direction, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for record in records:
            if not record.in_space:
                study.ask()
                continue
            study.enqueue_trial(record.params)
            trial = study.ask()
            space.suggest(trial)
            if record.run_id:
                trial.set_user_attr("mlflow_run_id", record.run_id)
            complete = record.state == "complete"
            study.tell(
                trial,
                record.best_val_loss if complete else None,
                state=TrialState.COMPLETE if complete else TrialState.FAIL,
            )
    return study


def summary(records: list[TrialRecord], space: SearchSpace) -> dict[str, Any]:
    """The parent run's summary: Optuna's (counts, best trial) of the space's points, the trials
    of points no longer in it, and the epochs spent by all."""
    from sweep.study import best_summary

    return {
        **best_summary(as_study(records, space), space),
        OUTSIDE_METRIC: sum(not r.in_space for r in records),
        EPOCHS_METRIC: epochs_spent(records),
    }


def describe(records: list[TrialRecord], space: SearchSpace, tuner: str) -> str:
    """One line: the space's trials by state and the best of them, the trials of points no
    longer in the space, and the epochs the search spent."""
    from sweep.study import describe_best

    named = dataclasses.replace(space, study=study_name(space, tuner))
    text = describe_best(as_study(records, space), named)
    outside = sum(not r.in_space for r in records)
    if outside:
        text += f"; {kept_note(outside)}"
    return f"{text}; {epochs_spent(records)} epochs"


def _tag(client: Any, run_id: str, tuner: str, **extra: str) -> None:
    from mlflow.entities import RunTag

    tags = {"backend": BACKEND, "tuner": tuner, **extra}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


@contextlib.contextmanager
def _epochs_logged(trial: TunerTrial, run: TrialRun) -> Iterator[None]:
    """Log the epochs the trial trained, however it ends (before the run is ended)."""
    try:
        yield
    finally:
        run.log_results({EPOCHS_METRIC: trial.user_attrs.get(EPOCHS_METRIC, 0)})


def make_trial(
    space: SearchSpace,
    profile: Profile,
    split: Split,
    tracker: Tracker,
    parent_run_id: str,
    run_params: dict[str, Any],
    progress: Progress,
) -> Callable[[TunerTrial], float]:
    """The trial recipe, as the Optuna path's: decode, build (or continue Hyperband's earlier
    trial), fit with per-epoch logs, record, return the best val_loss."""
    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    from sweep.study import _trial_params, recorded
    from sweep.tf_env import use_xla
    from sweep.training import train_trial

    def configure(trial: TunerTrial) -> tuple[Any, Split]:
        config = profile.apply(space.config_for(space.decode(trial.params)))
        if trial.epochs is not None:
            config = config.replace(epochs=trial.epochs)
        return config, split.take(config.train_size, config.val_size)

    def run_trial(trial: TunerTrial) -> float:
        shown = {k: format_value(v) for k, v in trial.params.items()}
        if trial.epochs is not None:
            shown["epochs"] = f"{trial.initial_epoch}->{trial.epochs}"
        if "tuner/trial_id" in trial.tuner_values:
            shown["continues"] = f"trial {int(trial.tuner_values['tuner/trial_id'])}"
        progress.trial_started(trial.number, shown)
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            config, data = configure(trial)
            params = _trial_params(config, trial, run_params, data)
        except Exception as exc:  # noqa: BLE001 - raised again inside the run, which records it
            failure, params = exc, {**trial.params, **run_params}
        params.update(trial.tuner_values)
        with (
            tracker.trial_run(parent_run_id, run_params["study"], trial.number, params) as run,
            recorded(trial, run, progress, started),
            _epochs_logged(trial, run),
            tempfile.TemporaryDirectory(prefix="sweep-trial-") as tmp,
        ):
            _tag(run.client, run.run_id, run_params["tuner"], keras_tuner_trial=trial.trial_id)
            trial.set_user_attr("mlflow_run_id", run.run_id)
            if failure is not None:
                raise failure

            facts: dict[str, Any] = {}

            def on_event(event: tuple) -> None:
                if event[0] == "built":
                    facts.update(event[1])
                    run.log_text(facts["summary"], "model_summary.txt")
                    run.log_dict(facts["architecture"], "architecture.json")
                    return
                _, epoch, logs = event
                trial.set_user_attr(EPOCHS_METRIC, epoch)
                step = trial.initial_epoch + epoch
                run.log_epoch(step, {"loss": logs["loss"], "val_loss": logs["val_loss"]})
                progress.epoch(step, config.epochs, logs, time.perf_counter() - started)

            to_train = config.replace(epochs=max(1, config.epochs - trial.initial_epoch))
            model_path = str(Path(tmp) / "model.keras")
            fit = train_trial(on_event, to_train, data, run_params["seed"], use_xla(), model_path,
                              start_from=trial.start_from, checkpoint=trial.checkpoint)  # fmt: skip
            n_params = facts["param_count"]
            best_epoch = trial.initial_epoch + fit.best_epoch
            run.log_results(
                {
                    "best_val_loss": fit.best_val_loss,
                    "best_epoch": best_epoch,
                    "epochs_run": len(fit.val_loss),
                    "train_seconds": fit.seconds,
                    "param_count": n_params,
                    "images_per_second": len(data.x_train) * len(fit.loss) / fit.seconds,
                }
            )
            run.log_model(model_path)
            progress.trial_ended(
                "complete",
                f"best val_loss {fit.best_val_loss:.5f} at epoch {best_epoch}, "
                f"{n_params:,} params, {fit.seconds:.1f} s",
            )
            return fit.best_val_loss

    return run_trial


def run_search(
    space: SearchSpace,
    profile: Profile,
    source: DataSource,
    tracker: Tracker,
    output: Path,
    *,
    tuner: str = "hyperband",
    n_trials: int | None = None,
    seed: int = 0,
    search_seed: int | None = None,
    progress_stream: TextIO | None = None,
    trial_factory: Callable[..., Callable[[TunerTrial], float]] | None = None,
) -> list[TrialRecord]:
    """Run (or continue) the space's keras-tuner search; return every trial of it.

    One MLflow parent run per search (experiment `study_name`), one nested run per trial.
    `seed` fixes the data split and weight initialisation, `search_seed` (default: `seed`) the
    tuner's choices. `trial_factory` (default: make_trial) lets tests drive the same search with
    a fake recipe.
    """
    from sweep.study import Progress, load_split, note_precision, study_run_params

    check_space(space, tuner)
    study = study_name(space, tuner)
    max_epochs = profile.apply(space.base).epochs
    kt_tuner = open_tuner(
        space, tuner, project_dir(output, space, tuner),
        max_epochs=max_epochs, n_trials=n_trials, seed=seed if search_seed is None else search_seed,
    )  # fmt: skip
    budget, done = planned_trials(kt_tuner), done_trials(kt_tuner)
    left = max(0, budget - done)
    say = Progress(left, progress_stream).say
    described = dataclasses.replace(space, sampler=f"keras-tuner {tuner}").describe()
    say(f"Study {study!r}: {described}; {done} of {budget} trials done, {left} to run")
    outside = sum(not r.in_space for r in trial_records(kt_tuner.oracle.trials.values(), space))
    if outside:
        say(f"{kept_note(outside)}.")
    if left == 0:
        say(nothing_left(space, budget))
        return trial_records(kt_tuner.oracle.trials.values(), space, _run_ids(tracker, study))
    note_precision(space, profile, say)
    split, _ = load_split(space, profile, source, seed, say)
    space.check_images(*split.image_size)
    run_params = {
        **study_run_params(study, space, profile, source, seed),
        "backend": BACKEND,
        "tuner": tuner,
    }
    settings = {"n_trials": budget}
    if tuner == "hyperband":
        settings.update(max_epochs=max_epochs, factor=HYPERBAND_FACTOR)
    parent = tracker.study_run(study, {**run_params, **settings})
    _tag(tracker.client, parent, tuner)
    progress = Progress(left, progress_stream)
    factory = trial_factory or make_trial
    kt_tuner.recipe = factory(space, profile, split, tracker, parent, run_params, progress)
    status = "FINISHED"
    try:
        kt_tuner.search()
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        records = trial_records(kt_tuner.oracle.trials.values(), space, _run_ids(tracker, study))
        tracker.end_study_run(parent, summary(records, space), status)
    ran = len({_key(r.params) for r in records if r.in_space}) if tuner == "grid" else len(records)
    if ran < budget:
        say(
            f"keras-tuner's {tuner} stopped after {ran} of {budget} trials: it stops "
            "when the space has no untried point left"
            + (" or too few trials of a round completed" if tuner == "hyperband" else "")
        )
    return records
