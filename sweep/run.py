"""A sweep run on the Optuna backend, the thin entry the CLI calls: plan the study's budget,
choose the slots (sweep.slots), check the data and the space, open the study and its MLflow
parent run, then one worker loop per slot (sweep.scheduler) over the trial recipe
(sweep.recipe)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import optuna

from sweep.budget import by_cost, plan, queue_retries
from sweep.context import Progress, TrialContext, announce, parent_run_ended, prepare_run
from sweep.data import DataSource
from sweep.errors import SweepError
from sweep.points import CONFIRMS
from sweep.profiles import Profile
from sweep.recipe import Job, train
from sweep.scheduler import HEARTBEAT_SECONDS, Callback, Shared, Worker, retry_stale, run_slots
from sweep.slots import Slots
from sweep.slots import check as check_slots
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
    value reported for pruning (a confirmation trial is never pruned: its seeds are compared
    whole)."""
    confirming = bool(trial.user_attrs.get(CONFIRMS))

    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if not confirming and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    tags = {"sweep.confirms": "true"} if confirming else {}
    return Job(trial.number, dict(trial.params), trial.set_user_attr, report, tags=tags)


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
    jobs: int | str | None = 1,
    threads: int | None = None,
    gpus: tuple[str, ...] | None = None,
) -> optuna.Study:
    """Work on the space's study until its study-wide budget is spent (or a callback calls
    study.stop()): one worker per slot (`jobs` trials at once, "auto": as many as the machine
    runs well, see sweep.slots), which any number of other processes (same storage and tracking
    server) may join at any time. A classifier space needs `encoder` (an EncoderSource);
    `isolate=False` trains autoencoder trials in this process instead of one process each."""
    if space.kind == "classifier" and encoder is None:
        raise SweepError(f"{space.path} trains a classifier: pass --encoder-from or run a sweep")
    on_stale = partial(retry_stale, tracker, heartbeat_seconds)
    storage = open_storage(storage_url, heartbeat_seconds, on_stale)
    lock = StudyLock(storage_url, space.study)
    with lock():
        study = find_study(space, storage)
        todo = plan(study, space, n_trials)
    can_share = isolate and space.kind == "autoencoder"
    check_slots(jobs, threads, can_share)
    outside = not_in_space(study, space)
    if not announce(
        space.study, space.describe(), todo.done, todo.budget, todo.n_trials, outside, space
    ):
        return study
    if can_share:
        from sweep.worker import start_server

        start_server()  # its Keras import overlaps loading the data
    # The data and the space are checked against each other before the study exists, so a
    # bad file leaves nothing behind in the stores.
    ready = prepare_run(space, profile, source, seed, space.study)
    if space.kind == "classifier":
        from sweep.classify import check_inputs

        check_inputs(profile.apply(space.base), ready.split, ready.n_classes, encoder)
    slots = choose_slots(jobs, threads, gpus, todo.n_trials, can_share, ready.split)
    log.info("Slots: %s", slots.describe())
    with lock():
        study = open_study(space, storage)
        space = align_choices(study, space, storage)
        if any(p.choices for p in space.params):
            study = open_study(space, storage)  # a fresh cache of the widened choices
        settings = {"sampler": space.sampler, "pruner": space.pruner, "n_trials": todo.budget}
        parent = tracker.study_run(space.study, {**ready.run_params, **settings})
        tracker.tag_run(parent, slot_tags(slots))
        queue_retries(study, space, todo)
    shared = Shared(todo.n_trials - todo.confirming, todo.confirming)
    ctx = TrialContext(
        space,
        profile,
        ready.split,
        tracker,
        parent,
        ready.run_params,
        Progress(todo.n_trials, lambda: shared.running),
        encoder,
        ready.n_classes,
        isolate,
        jobs=slots.jobs,
        stop=shared.stop,
    )
    order = grid_order(space, profile, ready.split) if space.sampler == "grid" else ()
    workers, objectives = [], []
    for index in range(slots.jobs):
        worker = Worker(
            study, storage, space, todo, lock, heartbeat_seconds, callbacks, shared, order, index
        )
        workers.append(worker)
        objectives.append(make_objective(replace(ctx, slot=slots.slot(index))))
    with parent_run_ended(tracker, parent, lambda: best_summary(study, space)):
        run_slots(workers, objectives, in_processes=can_share)
    return study


def choose_slots(
    jobs: int | str | None,
    threads: int | None,
    gpus: tuple[str, ...] | None,
    to_run: int,
    can_share: bool,
    split: Any,
) -> Slots:
    """The run's slots (sweep.slots.choose), from the machine's GPUs and the size of the split
    each trial's process gets a copy of."""
    from sweep.slots import choose

    visible = 0
    if can_share and gpus != ():
        from sweep.tf_env import gpu_count

        visible = gpu_count()
    data_bytes = split.x_train.nbytes + split.x_val.nbytes
    return choose(
        jobs,
        to_run=to_run,
        threads=threads,
        gpus=gpus,
        visible_gpus=visible,
        data_bytes=data_bytes,
        can_share=can_share,
    )


def slot_tags(slots: Slots) -> dict[str, str]:
    """The MLflow tags of the parent run that say how its latest run shared the machine."""
    return {
        "sweep.jobs": str(slots.jobs),
        "sweep.threads_per_trial": str(slots.threads or "default"),
        "sweep.gpus": ",".join(slots.gpus) or "none",
        "sweep.slots": slots.describe(),
    }


def grid_order(space: SearchSpace, profile: Profile, split: Any) -> tuple[dict[str, Any], ...]:
    """The grid's points, most expensive first: cost estimated as multiply-adds per image x
    training images x epochs (models.plan), so the longest trial does not run alone at the end.
    Points whose config cannot be built keep their place (they fail when their turn comes)."""
    if space.kind != "autoencoder":
        return tuple(space.grid_points())
    from models.plan import training_cost

    def cost(point: dict[str, Any]) -> float | None:
        try:
            config = profile.apply(space.config_for(space.decode(point)))
            images = len(split.take(config.train_size, config.val_size).x_train)
            return training_cost(config, split.input_shape, images)
        except Exception:  # noqa: BLE001 - an unbuildable point fails as its own trial
            return 0.0

    return by_cost(space.grid_points(), cost)
