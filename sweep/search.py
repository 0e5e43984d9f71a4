"""A keras-tuner search, the keras-tuner backend's runner: open (or continue) the tuner, check
the data and the space, open the search's MLflow parent run, let the tuner's oracle decide and
the project's trial recipe (sweep.recipe) train; read a search's trials back as records."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.context import Progress, TrialContext, announce, parent_run_ended, prepare_run
from sweep.errors import SweepError
from sweep.outcomes import describe as describe_summary
from sweep.outcomes import summarise
from sweep.points import OUTSIDE_METRIC, kept_note, key
from sweep.recipe import EPOCHS_METRIC, Job, tag, train
from sweep.space import SearchSpace
from sweep.tuner import (
    BACKEND,
    HYPERBAND_FACTOR,
    STATES,
    check_space,
    done_trials,
    hyperparameters,
    import_keras_tuner,
    in_space,
    open_tuner,
    planned_trials,
    point,
    project_dir,
    study_name,
)

if TYPE_CHECKING:
    from sweep.data import DataSource
    from sweep.profiles import Profile
    from sweep.tracking import Tracker

log = logging.getLogger(__name__)


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

    @property
    def value(self) -> float | None:
        return self.best_val_loss


def _epochs(trial: Any) -> int:
    if not trial.metrics.exists(EPOCHS_METRIC):
        return 0
    return int(sum(sum(obs.value) for obs in trial.metrics.get_history(EPOCHS_METRIC)))


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
                params=point(values),
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
    trial_class = import_keras_tuner().engine.trial.Trial
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


def _listed(records: list[TrialRecord]) -> list[TrialRecord]:
    """The counts and best of the space's trials, every one not complete counted as failed
    (an interrupted trial too)."""
    return [
        dataclasses.replace(r, state=r.state if r.state == "complete" else "failed")
        for r in records
        if r.in_space
    ]


def summary(records: list[TrialRecord], space: SearchSpace) -> dict[str, Any]:
    """The parent run's summary: counts and the best trial of the space's points, the trials of
    points no longer in it, and the epochs spent by all."""
    return {
        **summarise(_listed(records), space),
        OUTSIDE_METRIC: outside_count(records),
        EPOCHS_METRIC: epochs_spent(records),
    }


def describe(records: list[TrialRecord], space: SearchSpace, tuner: str) -> str:
    """One line: the space's trials by state and the best of them, the trials of points no
    longer in the space, and the epochs the search spent."""
    text = describe_summary(summarise(_listed(records), space), space, study_name(space, tuner))
    if outside := outside_count(records):
        text += f"; {kept_note(outside)}"
    return f"{text}; {epochs_spent(records)} epochs"


def outside_count(records: Iterable[TrialRecord]) -> int:
    """The search's trials of points the space no longer holds."""
    return sum(not r.in_space for r in records)


def make_recipe(ctx: TrialContext) -> Callable[[Job], float]:
    """The recipe each trial of the search runs."""
    return partial(train, ctx)


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
) -> list[TrialRecord]:
    """Run (or continue) the space's keras-tuner search; return every trial of it.

    One MLflow parent run per search (experiment `study_name`), one nested run per trial.
    `seed` fixes the data split and weight initialisation, `search_seed` (default: `seed`) the
    tuner's choices.
    """
    check_space(space, tuner)
    study = study_name(space, tuner)
    max_epochs = profile.apply(space.base).epochs
    search_seed = seed if search_seed is None else search_seed
    folder = project_dir(output, space, tuner)
    kt_tuner = open_tuner(
        space, tuner, folder, max_epochs=max_epochs, n_trials=n_trials, seed=search_seed
    )
    budget, done = planned_trials(kt_tuner), done_trials(kt_tuner)
    left = max(0, budget - done)
    described = dataclasses.replace(space, sampler=f"keras-tuner {tuner}").describe()
    outside = outside_count(trial_records(kt_tuner.oracle.trials.values(), space))
    if not announce(study, described, done, budget, left, outside, space):
        return trial_records(kt_tuner.oracle.trials.values(), space, _run_ids(tracker, study))
    ready = prepare_run(space, profile, source, seed, study)
    run_params = {**ready.run_params, "backend": BACKEND, "tuner": tuner}
    settings: dict[str, Any] = {"n_trials": budget}
    if tuner == "hyperband":
        settings.update(max_epochs=max_epochs, factor=HYPERBAND_FACTOR)
    parent = tracker.study_run(study, {**run_params, **settings})
    tags = {"backend": BACKEND, "tuner": tuner}
    tag(tracker.client, parent, tags)
    ctx = TrialContext(
        space, profile, ready.split, tracker, parent, run_params, Progress(left), isolate=False
    )
    kt_tuner.recipe, kt_tuner.run_tags = make_recipe(ctx), tags

    def records_now() -> list[TrialRecord]:
        return trial_records(kt_tuner.oracle.trials.values(), space, _run_ids(tracker, study))

    with parent_run_ended(tracker, parent, lambda: summary(records_now(), space)):
        kt_tuner.search()
    records = records_now()
    ran = len({key(r.params) for r in records if r.in_space}) if tuner == "grid" else len(records)
    if ran < budget:
        log.info(
            "keras-tuner's %s stopped after %d of %d trials: it stops when the space has no "
            "untried point left%s",
            tuner,
            ran,
            budget,
            " or too few trials of a round completed" if tuner == "hyperband" else "",
        )
    return records
