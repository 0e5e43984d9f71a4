"""A sweep run on the Optuna backend, the thin entry the CLI calls: plan the study's budget,
check the data and the space, open the study and its MLflow parent run, then one worker's
loop (sweep.scheduler) over the trial recipe (sweep.recipe)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import optuna

from sweep.context import Progress, TrialContext, announce, parent_run_ended, prepare_run
from sweep.data import DataSource
from sweep.errors import SweepError
from sweep.profiles import Profile
from sweep.recipe import Job, train
from sweep.scheduler import (
    HEARTBEAT_SECONDS,
    Callback,
    Worker,
    plan,
    queue_retries,
    retry_stale,
)
from sweep.space import SearchSpace
from sweep.storage import StudyLock, open_storage
from sweep.study import align_choices, best_summary, find_study, not_in_space, open_study

log = logging.getLogger(__name__)


def make_objective(ctx: TrialContext) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: ask the trial for the space's parameters, hand them to the recipe
    with the trial's reports and pruning. Keras is imported here once (without touching a
    device when trials train in processes of their own)."""
    if ctx.space.kind == "autoencoder":
        from sweep.tf_env import import_keras_quietly

        import_keras_quietly(initialise=not ctx.isolate)

    def objective(trial: optuna.Trial) -> float:
        ctx.space.suggest(trial)
        return train(ctx, optuna_job(trial))

    return objective


def optuna_job(trial: optuna.Trial) -> Job:
    """An Optuna trial as the recipe's Job: its stored params, its user attrs, and each epoch's
    value reported for pruning."""

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return Job(trial.number, dict(trial.params), trial.set_user_attr, report)


def run_sweep(
    space: SearchSpace,
    profile: Profile,
    source: DataSource,
    storage_url: str,
    tracker: Any,
    *,
    n_trials: int | None = None,
    seed: int = 0,
    encoder: Any = None,
    heartbeat_seconds: int | None = HEARTBEAT_SECONDS,
    isolate: bool = True,
    callbacks: Sequence[Callback] = (),
) -> optuna.Study:
    """Work on the space's study until its study-wide budget is spent (or a callback calls
    study.stop()): one worker, which any number of others (same storage and tracking server)
    may join at any time. A classifier space needs `encoder` (an EncoderSource); `isolate=False`
    trains autoencoder trials in this process instead of one process each."""
    if space.kind == "classifier" and encoder is None:
        raise SweepError(f"{space.path} trains a classifier: pass --encoder-from or run a sweep")
    on_stale = partial(retry_stale, tracker, heartbeat_seconds)
    storage = open_storage(storage_url, heartbeat_seconds, on_stale)
    lock = StudyLock(storage_url, space.study)
    with lock():
        study = find_study(space, storage)
        todo = plan(study, space, n_trials)
    outside = not_in_space(study, space)
    if not announce(
        space.study, space.describe(), todo.done, todo.budget, todo.n_trials, outside, space
    ):
        return study
    if isolate and space.kind == "autoencoder":
        from sweep.worker import start_server

        start_server()  # its Keras import overlaps loading the data
    # The data and the space are checked against each other before the study exists, so a
    # bad file leaves nothing behind in the stores.
    ready = prepare_run(space, profile, source, seed, space.study)
    if space.kind == "classifier":
        from sweep.classify import check_inputs

        check_inputs(profile.apply(space.base), ready.split, ready.n_classes, encoder)
    with lock():
        study = open_study(space, storage)
        space = align_choices(study, space, storage)
        if any(p.choices for p in space.params):
            study = open_study(space, storage)  # a fresh cache of the widened choices
        settings = {"sampler": space.sampler, "pruner": space.pruner, "n_trials": todo.budget}
        parent = tracker.study_run(space.study, {**ready.run_params, **settings})
        queue_retries(study, todo)
    ctx = TrialContext(
        space,
        profile,
        ready.split,
        tracker,
        parent,
        ready.run_params,
        Progress(todo.n_trials),
        encoder,
        ready.n_classes,
        isolate,
    )
    objective = make_objective(ctx)
    worker = Worker(study, storage, space, todo, lock, heartbeat_seconds, callbacks)
    with parent_run_ended(tracker, parent, lambda: best_summary(study, space)):
        worker.run(objective)
    return study
