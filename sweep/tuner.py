"""keras-tuner backend: a SearchSpace -> keras-tuner HyperParameters and one of its tuners, whose
trials run the project's trial recipe (sweep.recipe) as Jobs; sweep.search runs a search.

This is the one module that translates a space into keras-tuner (space.py translates it into
Optuna). A value keras-tuner cannot hold (a filter list, a group of keys) is a choice between
the labels Optuna stores, and space.py decodes the labels into config values. The oracle
decides what to try; the recipe trains one trial; the tuner's project folder
(<output>/keras-tuner/<study>) lets a rerun continue a search. A grid continues over an edited
space: trials of points the space no longer holds are kept, and neither block a point nor count.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import SweepError
from sweep.points import key
from sweep.recipe import EPOCHS_METRIC, Job
from sweep.space import Param, SearchSpace

if TYPE_CHECKING:
    import keras_tuner


BACKEND = "keras-tuner"
TUNERS = ("hyperband", "bayesian", "random", "grid")
HYPERBAND_FACTOR = 3
# What Hyperband adds to a trial's values: the epochs to reach, the epoch it starts from, and
# (when it continues an earlier trial) that trial's id; logged as MLflow params.
HYPERBAND_KEYS = (
    "tuner/epochs",
    "tuner/initial_epoch",
    "tuner/trial_id",
    "tuner/bracket",
    "tuner/round",
)
STATES = {"COMPLETED": "complete", "FAILED": "failed", "INVALID": "failed"}


def import_keras_tuner():
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
    if space.repeats > 1:
        raise SweepError(
            f"repeats {space.repeats}: the keras-tuner backend trains each point once; "
            "use --backend optuna for repeats"
        )
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
    hp = import_keras_tuner().HyperParameters()
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


def point(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's point: its values without Hyperband's keys (a parameter the space has dropped
    since stays, so that the point is not taken for one of the space's)."""
    return {k: v for k, v in values.items() if k not in HYPERBAND_KEYS}


def in_space(hps: keras_tuner.HyperParameters, values: dict[str, Any]) -> bool:
    """Whether a trial's point is one of the space's as the file is now: the same parameters,
    each at a value it can take (on its grid, where it has one)."""
    values, space = point(values), {hp.name: hp for hp in hps.space}
    return values.keys() == space.keys() and all(_holds(space[k], v) for k, v in values.items())


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


class _RecipeRunner:
    """Mixed into a keras-tuner tuner: each trial the oracle creates runs the project's recipe
    (`recipe(job)`, sweep.recipe). A trial that raises is a FAILED trial (keras-tuner's
    FailedTrialError: no retry), and the epochs it trained are kept in the trial as the metric
    `epochs_trained`."""

    space: SearchSpace
    recipe: Callable[[Job], float]
    run_tags: dict[str, str]
    keeps_checkpoints: bool

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        facts: dict[str, Any] = {}
        job = self.as_job(trial, facts)
        try:
            best = self.recipe(job)
        except Exception as exc:
            reason = facts.get("fail_reason") or f"{type(exc).__name__}: {exc}"
            raise import_keras_tuner().errors.FailedTrialError(reason) from exc
        finally:
            _add_epochs(trial, facts.get(EPOCHS_METRIC, 0))
        return {"val_loss": best}

    def as_job(self, trial: Any, facts: dict[str, Any]) -> Job:
        """The trial as the recipe's Job; what the recipe records goes into `facts`. Hyperband's
        continuations train to its `tuner/epochs` from the best weights of the trial they
        continue."""
        return job_for(
            trial.trial_id,
            trial.hyperparameters.values,
            self.space,
            facts,
            self.run_tags,
            self._get_checkpoint_fname if self.keeps_checkpoints else None,  # type: ignore[attr-defined]
        )


def job_for(
    trial_id: str,
    values: dict[str, Any],
    space: SearchSpace,
    facts: dict[str, Any],
    tags: dict[str, str],
    checkpoint: Callable[[str], str] | None = None,
) -> Job:
    """A keras-tuner trial's values as a Job; `checkpoint(trial_id)` names a trial's saved
    weights where Hyperband keeps them."""
    tuner_values = {k: values[k] for k in HYPERBAND_KEYS if k in values}
    continues = values.get("tuner/trial_id")
    shown: dict[str, Any] = {}
    epochs = tuner_values.get("tuner/epochs")
    initial = int(tuner_values.get("tuner/initial_epoch", 0))
    if epochs is not None:
        shown["epochs"] = f"{initial}->{epochs}"
    if continues is not None:
        shown["continues"] = f"trial {int(continues)}"
    return Job(
        number=int(trial_id),
        params=stored_params(space, values),
        record=facts.__setitem__,
        shown=shown,
        logged=tuner_values,
        tags={**tags, "keras_tuner_trial": trial_id},
        epochs=epochs,
        initial_epoch=initial,
        checkpoint=Path(checkpoint(trial_id)) if checkpoint else None,
        start_from=Path(checkpoint(continues)) if checkpoint and continues else None,
        count_epochs=True,
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
        self._taken = {key(point(self.trials[t].hyperparameters.values)) for t in retry}
        self.max_trials = len(self.trials) + max(0, self.budget - len(self.complete_points()))

    def complete_points(self) -> set[tuple]:
        """The space's points that have a complete trial."""
        complete = (t for t in self.trials.values() if t.status == "COMPLETED")
        return {key(point(t.hyperparameters.values)) for t in complete if self._in_space(t)}

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """The first point in grid order neither complete nor tried in this search, while the
        budget lasts."""
        taken = self.complete_points() | self._taken
        points = (p for p in self._grid() if key(p) not in taken)
        chosen = next(points, None) if len(taken) < self.budget else None
        if chosen is None:
            return {"status": "STOPPED", "values": None}
        self._taken.add(key(chosen))
        return {"status": "RUNNING", "values": chosen}

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
    kt = import_keras_tuner()
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
    made.space, made.keeps_checkpoints, made.run_tags = space, tuner == "hyperband", {}
    return made


def _make_tuner(
    tuner: str, budget: int, max_epochs: int, common: dict[str, Any], project: dict[str, Any]
) -> keras_tuner.Tuner:
    """keras-tuner's tuner running the recipe; a grid is keras-tuner's Tuner with _GridWalk."""
    kt = import_keras_tuner()
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
