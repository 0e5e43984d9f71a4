"""Optuna studies: storage, sampler and pruner from the space, the budget, and the objective."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.trial import TrialState

from sweep.data import DataSource, Split
from sweep.errors import SweepError
from sweep.points import OUTSIDE_METRIC, is_listed, kept_note
from sweep.profiles import Profile
from sweep.space import SearchSpace, format_value, nothing_left
from sweep.storage import GRACE_FACTOR, StudyLock, open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
BUSY_STATES = (TrialState.RUNNING, TrialState.WAITING)
HEARTBEAT_SECONDS = 30
MAX_RETRY = 2


def open_study(space: SearchSpace, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the space's study, or load it to continue where it stopped."""
    # Grid points are queued one at a time by the workers (next_step), never drawn by a
    # GridSampler, whose choice races between workers; the queued trials fix every parameter.
    sampler = optuna.samplers.RandomSampler() if space.sampler == "grid" else space.make_sampler()
    study = optuna.create_study(
        study_name=space.study,
        storage=storage,
        sampler=sampler,
        pruner=space.make_pruner(),
        direction=space.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != space.direction:
        raise SweepError(
            f"study {space.study!r} in the storage optimises in the other direction; "
            f"give {space.path} another study name"
        )
    if study.user_attrs.get("kind") != space.kind:
        study.set_user_attr("kind", space.kind)
        study.set_user_attr("metric", space.metric)
    # What the space lists now, so that readers can tell the trials of points it dropped.
    listed = space.listed()
    if study.user_attrs.get("space") != listed:
        study.set_user_attr("space", listed)
    return study


def state_counts(study: optuna.Study) -> Counter[str]:
    """Trials by state name ('complete', 'pruned', 'fail', 'running', ...)."""
    return Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))


@dataclass(frozen=True)
class Plan:
    """What this run does: `n_trials` new trials, the first ones re-running `retry` points."""

    budget: int
    done: int
    n_trials: int
    retry: tuple[dict[str, Any], ...] = ()


def plan(study: optuna.Study | None, space: SearchSpace, budget: int | None = None) -> Plan:
    """How many trials are left of the study-wide budget (`study` None: not created yet).
    Only trials of points the space lists now count; in a grid, points already complete or
    pruned are never run again; points whose only trials failed are queued again."""
    budget = budget or space.n_trials
    trials = study.get_trials(deepcopy=False) if study is not None else []
    done_trials = [t for t in trials if t.state in DONE_STATES and in_space(t, space)]
    if space.sampler != "grid":
        left = max(0, budget - len(done_trials))
        return Plan(budget, len(done_trials), left)
    if budget > len(space.grid_points()):
        raise SweepError(
            f"--n-trials {budget} is more than the {len(space.grid_points())} points of the "
            f"grid in {space.path}"
        )
    done_points = {_key(t.params) for t in done_trials}
    failed_points = {_key(t.params) for t in trials if t.state == TrialState.FAIL}
    retry = [p for p in space.grid_points() if _key(p) in failed_points - done_points]
    left = max(0, budget - len(done_points))
    return Plan(budget, len(done_points), left, tuple(retry[:left]))


def in_space(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> bool:
    """Whether the trial's point is one the space lists now. A space edited since its study
    began leaves trials of other points behind: kept in both stores, not counted."""
    return is_listed(_point(trial), space.listed())


def not_in_space(study: optuna.Study | None, space: SearchSpace) -> int:
    """How many finished trials are of points the space no longer lists."""
    if study is None:
        return 0
    trials = study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.FAIL))
    return sum(not in_space(t, space) for t in trials)


def align_choices(study: optuna.Study, space: SearchSpace, storage: Any) -> SearchSpace:
    """The space with Optuna choices its study accepts. Optuna refuses a categorical parameter
    whose choices differ from those recorded: an edited grid keeps the recorded choices and
    appends its new labels, and the recorded distributions are widened to match in the
    storage (values are stored as indices into the choices, so appending keeps every old
    trial's value). Other samplers model their choices, so theirs cannot change."""
    from optuna.distributions import CategoricalDistribution, check_distribution_compatibility

    recorded: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            recorded.setdefault(name, distribution)
    params, widened = [], {}
    for p in space.params:
        old = recorded.get(p.name)
        try:
            if old is not None:
                check_distribution_compatibility(old, p.distribution())
            params.append(p)
            continue
        except ValueError:
            pass
        if p.is_range or not isinstance(old, CategoricalDistribution) or space.sampler != "grid":
            raise SweepError(
                f"{space.path}: params.{p.name} changed since study {space.study!r} began, and "
                f"a {space.sampler} study cannot change it; give the study a new name "
                "(study: NAME in the file) or restore the parameter"
            )
        choices = tuple(old.choices) + tuple(x for x in p.labels if x not in old.choices)
        if choices != tuple(old.choices):
            widened[p.name] = CategoricalDistribution(choices)
        params.append(dataclasses.replace(p, choices=choices))
    if widened:
        _widen_recorded(storage, study, widened)
    return dataclasses.replace(space, params=tuple(params))


def _widen_recorded(storage: Any, study: optuna.Study, widened: dict[str, Any]) -> None:
    """Write the widened distributions over every recorded value of those parameters."""
    from optuna.distributions import distribution_to_json
    from sqlalchemy import text

    update = text(
        "UPDATE trial_params SET distribution_json = :d WHERE param_name = :n AND trial_id IN "
        "(SELECT trial_id FROM trials WHERE study_id = :s)"
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage.engine.begin() as connection:
        for name, distribution in widened.items():
            connection.execute(
                update, {"d": distribution_to_json(distribution), "n": name, "s": study_id}
            )


def find_study(space: SearchSpace, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The space's study if the storage has it; None before its first run."""
    if space.study not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=space.study, storage=storage)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _point(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's grid point: its parameters, or, before its objective has suggested them
    (just taken from the queue), the ones it was queued with."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


@dataclass(frozen=True)
class Step:
    """What a worker does next: "run" (a queued trial, or `point` queued first), "wait" for
    other workers' running trials (they may fail and need a retry), or "stop"."""

    action: str
    point: dict[str, Any] | None = None
    busy: int = 0


def next_step(study: optuna.Study, space: SearchSpace, budget: int) -> Step:
    """Decide under the study lock, from what every worker has recorded: completed and pruned
    trials count towards the budget; running and queued ones are taken. A grid point that is
    done, running, queued or failed is not queued here (a worker's start queues failed points
    once more, see run_sweep)."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in DONE_STATES and in_space(t, space)]
    busy = [t for t in trials if t.state in BUSY_STATES]
    if len(done) >= budget:
        return Step("stop")
    if any(t.state == TrialState.WAITING for t in trials):
        return Step("run")
    if space.sampler == "grid":
        taken = {_key(_point(t)) for t in trials if t.state != TrialState.WAITING}
        if len({_key(_point(t)) for t in done}) + len(busy) < budget:
            for point in space.grid_points():
                if _key(point) not in taken:
                    return Step("run", point)
    elif len(done) + len(busy) < budget:
        return Step("run")
    return Step("wait", busy=len(busy)) if busy else Step("stop")


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Send the trial's heartbeat every interval while the body runs (Optuna's own heartbeat,
    as study.optimize sends it), so a worker that dies leaves a stale trial behind."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(study: optuna.Study, storage, trial: optuna.Trial, objective: Callable) -> None:
    """One trial of the worker loop: heartbeat, objective, then tell the storage how it ended.
    Failures are recorded (and reported by the objective), never raised; Ctrl-C is recorded
    as a failed trial and raised."""
    value, state = None, TrialState.COMPLETE
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    with heartbeat(storage, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # noqa: BLE001 - the objective records what it can
            state = TrialState.FAIL
            if "fail_reason" not in trial.user_attrs:  # it failed before its run existed
                reason = f"{type(exc).__name__}: {exc}"
                trial.set_user_attr("fail_reason", reason[:5000])
                print(f"    -> failed: {reason.splitlines()[0][:300]}", flush=True)
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except ValueError as exc:
        # Another worker saw no heartbeat from this one for the grace period, failed the trial
        # and queued it again; the queued copy will run, so this result is dropped.
        print(f"    trial {trial.number} was already ended elsewhere ({exc}); "
              "its queued retry will run it again", flush=True)  # fmt: skip


class Progress:
    """Readable progress lines: one per trial start and end, one per epoch."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.stream, self.count = total, stream or sys.stdout, 0

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.count += 1
        shown = "  ".join(f"{k}={v}" for k, v in params.items())
        self.say(f"[{self.count}/{self.total}] trial {number}: {shown}")

    def epoch(self, epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> None:
        self.say(
            f"    epoch {epoch:>3}/{epochs}  loss {logs['loss']:.5f}  "
            f"val_loss {logs['val_loss']:.5f}  {seconds:6.1f} s"
        )

    def trial_ended(self, state: str, detail: str) -> None:
        self.say(f"    -> {state}: {detail}")


@contextmanager
def recorded(trial: optuna.Trial, run: Any, progress: Progress, started: float) -> Iterator[None]:
    """Record how a trial ended in both stores: pruned, or failed with its reason and
    traceback; then free Keras' memory for the next trial."""
    from sweep.training import Diverged, live_graphs, release
    from sweep.worker import TrialProcessError

    graphs = live_graphs()
    try:
        yield
    except optuna.TrialPruned as exc:
        seconds = time.perf_counter() - started
        trial.set_user_attr("train_seconds", seconds)
        run.log_results({"train_seconds": seconds})
        run.finish("pruned", reason=str(exc))
        progress.trial_ended("pruned", f"{exc} ({seconds:.1f} s)")
        raise
    except Exception as exc:
        plain = isinstance(exc, Diverged | TrialProcessError)
        reason = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("fail_reason", reason)
        child = getattr(exc, "child_traceback", None)
        run.log_text(child or traceback.format_exc(), "traceback.txt")
        run.finish("failed", reason=reason)
        progress.trial_ended("failed", reason)
        raise
    finally:
        release(graphs)


def _trial_params(config: Any, trial: optuna.Trial, run_params: dict, data: Split) -> dict:
    return {
        **{k: format_value(v) for k, v in config.to_dict().items()},
        **trial.params,
        **run_params,
        "train_images": len(data.x_train),
        "val_images": len(data.x_val),
    }


def make_objective(
    space: SearchSpace,
    profile: Profile,
    split: Split,
    tracker: Any,
    parent_run_id: str,
    run_params: dict[str, Any],
    progress: Progress,
    *,
    isolate: bool = True,
) -> Callable[[optuna.Trial], float]:
    """The trial recipe: suggest, build, fit with per-epoch reports, record, return val_loss.

    With `isolate` each trial trains in a process of its own (sweep.worker): memory does not
    grow from trial to trial and a crash fails that trial alone. Without it, in this process
    (monkeypatched builders in tests, debuggers)."""
    from sweep.tf_env import import_keras_quietly, use_xla
    from sweep.training import Diverged, train_trial
    from sweep.worker import call_in_process, start_server

    if isolate:
        start_server()
    import_keras_quietly(initialise=not isolate)

    def objective(trial: optuna.Trial) -> float:
        config = profile.apply(space.config_for(space.suggest(trial)))
        data = split.take(config.train_size, config.val_size)
        progress.trial_started(trial.number, {k: format_value(v) for k, v in trial.params.items()})
        started = time.perf_counter()
        facts: dict[str, Any] = {}

        def on_event(event: tuple) -> None:
            if event[0] == "built":
                facts.update(event[1])
                trial.set_user_attr("param_count", facts["param_count"])
                run.log_text(facts["summary"], "model_summary.txt")
                run.log_dict(facts["architecture"], "architecture.json")
                return
            _, epoch, logs = event
            run.log_epoch(epoch, {"loss": logs["loss"], "val_loss": logs["val_loss"]})
            progress.epoch(epoch, config.epochs, logs, time.perf_counter() - started)
            trial.report(logs["val_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        params = _trial_params(config, trial, run_params, data)
        with (
            tracker.trial_run(parent_run_id, space.study, trial.number, params) as run,
            recorded(trial, run, progress, started),
            tempfile.TemporaryDirectory(prefix="sweep-trial-") as tmp,
        ):
            trial.set_user_attr("mlflow_run_id", run.run_id)
            model_path = str(Path(tmp) / "model.keras")
            args = (config, data, run_params["seed"], use_xla(), model_path)
            if isolate:
                fit, peak_mib = call_in_process(
                    train_trial, *args, on_event=on_event, rebuild={"Diverged": Diverged}
                )
                trial.set_user_attr("peak_rss_mib", round(peak_mib, 1))
            else:
                fit = train_trial(on_event, *args)
            n_params = facts["param_count"]
            results = {
                "best_val_loss": fit.best_val_loss,
                "best_epoch": fit.best_epoch,
                "epochs_run": len(fit.val_loss),
                "train_seconds": fit.seconds,
                "param_count": n_params,
                "images_per_second": len(data.x_train) * len(fit.loss) / fit.seconds,
            }
            if isolate:
                results["peak_rss_mib"] = peak_mib
            run.log_results(results)
            for key in ("train_seconds", "best_epoch", "epochs_run"):
                trial.set_user_attr(key, results[key])
            run.log_model(model_path)
            progress.trial_ended(
                "complete",
                f"best val_loss {fit.best_val_loss:.5f} at epoch {fit.best_epoch}, "
                f"{n_params:,} params, {fit.seconds:.1f} s",
            )
            return fit.best_val_loss

    return objective


def make_classifier_objective(
    space: SearchSpace,
    profile: Profile,
    split: Split,
    tracker: Any,
    parent_run_id: str,
    run_params: dict[str, Any],
    progress: Progress,
    *,
    encoder: Any,
    n_classes: int,
) -> Callable[[optuna.Trial], float]:
    """A classifier trial: a fresh copy of the encoder, both phases, the best val_accuracy.
    The test file is never read here: it is for `sweep classify`'s final evaluation."""
    from sweep.classify import prepare, train_two_phases

    def objective(trial: optuna.Trial) -> float:
        config = profile.apply(space.config_for(space.suggest(trial)))
        progress.trial_started(trial.number, {k: format_value(v) for k, v in trial.params.items()})
        started = time.perf_counter()

        def on_epoch(step: int, logs: dict[str, float]) -> None:
            trial.report(logs["val_accuracy"], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {step}")

        prepared = prepare(config, profile, split, n_classes, encoder, run_params["seed"])
        params = _trial_params(config, trial, run_params, prepared.data)
        with (
            tracker.trial_run(parent_run_id, space.study, trial.number, params) as run,
            recorded(trial, run, progress, started),
        ):
            trial.set_user_attr("mlflow_run_id", run.run_id)
            trial.set_user_attr("param_count", prepared.model.count_params())
            history, boundary, seconds = train_two_phases(
                prepared, config, run, progress.say, on_epoch
            )
            val = history[history["metric"] == "val_accuracy"]
            best = float(val["value"].max())
            trial.set_user_attr("train_seconds", seconds)
            trial.set_user_attr("phase_boundary", boundary)
            run.log_results({"best_val_accuracy": best})
            progress.trial_ended("complete", f"best val_accuracy {best:.4f}, {seconds:.1f} s")
            return best

    return objective


def best_summary(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    """The parent run's summary: counts by state and the best trial, if any."""
    counts = state_counts(study)
    summary: dict[str, Any] = {
        "n_complete": counts["complete"],
        "n_pruned": counts["pruned"],
        "n_failed": counts["fail"],
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in complete if in_space(t, space)]
    if outside := not_in_space(study, space):
        summary[OUTSIDE_METRIC] = outside
    if complete:
        pick = max if space.direction == "maximize" else min
        best = pick(complete, key=lambda t: t.value)
        summary[f"best_{space.metric}"] = best.value
        summary["best_trial"] = str(best.number)
        for key, value in space.decode(best.params).items():
            summary[f"best.{key}"] = str(format_value(value))
        if "mlflow_run_id" in best.user_attrs:
            summary["best_run_id"] = best.user_attrs["mlflow_run_id"]
    return summary


def run_sweep(
    space: SearchSpace,
    profile: Profile,
    source: DataSource,
    storage_url: str,
    tracker: Any,
    *,
    n_trials: int | None = None,
    seed: int = 0,
    progress_stream: TextIO | None = None,
    objective_factory: Callable[..., Callable[[optuna.Trial], float]] | None = None,
    encoder: Any = None,
    heartbeat_seconds: int | None = HEARTBEAT_SECONDS,
    isolate: bool = True,
) -> optuna.Study:
    """Work on the space's study until its study-wide budget is spent: one worker, which
    any number of others (same storage and tracking server) may join at any time.

    `objective_factory` (default: the space's kind's) lets tests drive the same study code
    with a fake objective. A classifier space needs `encoder` (an EncoderSource).
    `isolate=False` trains autoencoder trials in this process instead of one process each.
    """

    if space.kind == "classifier" and encoder is None and objective_factory is None:
        raise SweepError(f"{space.path} trains a classifier: pass --encoder-from or run a sweep")

    storage = open_storage(
        storage_url, heartbeat_seconds, partial(_retry_stale, tracker, heartbeat_seconds)
    )
    lock = StudyLock(storage_url, space.study)
    with lock():
        study = find_study(space, storage)
        todo = plan(study, space, n_trials)
    say = Progress(todo.n_trials, progress_stream).say
    say(
        f"Study {space.study!r}: {space.describe()}; {todo.done} of {todo.budget} trials done, "
        f"{todo.n_trials} to run"
    )
    if outside := not_in_space(study, space):
        say(f"{kept_note(outside)}.")
    if todo.n_trials == 0:
        say(nothing_left(space, todo.budget))
        return study
    note_precision(space, profile, say)
    if isolate and objective_factory is None and space.kind == "autoencoder":
        from sweep.worker import start_server

        start_server()  # its Keras import overlaps loading the data
    # The data and the space are checked against each other before the study exists, so a
    # bad file leaves nothing behind in the stores.
    split, n_classes = load_split(space, profile, source, seed, say)
    space.check_images(*split.image_size)
    if objective_factory is None and space.kind == "classifier":
        from sweep.classify import check_inputs

        check_inputs(profile.apply(space.base), split, n_classes, encoder)
    run_params = study_run_params(space.study, space, profile, source, seed)
    with lock():
        study = open_study(space, storage)
        space = align_choices(study, space, storage)
        if any(p.choices for p in space.params):
            study = open_study(space, storage)  # a fresh cache of the widened choices
        settings = {"sampler": space.sampler, "pruner": space.pruner, "n_trials": todo.budget}
        parent = tracker.study_run(space.study, {**run_params, **settings})
        # Grid points whose trials all failed get one more try when a worker starts.
        busy = {_key(_point(t)) for t in study.get_trials(deepcopy=False, states=BUSY_STATES)}
        for point in todo.retry:
            if _key(point) not in busy:
                study.enqueue_trial(point)
    progress = Progress(todo.n_trials, progress_stream)
    factory = objective_factory or partial(make_objective, isolate=isolate)
    if objective_factory is None and space.kind == "classifier":
        factory = partial(make_classifier_objective, encoder=encoder, n_classes=n_classes)
    objective = factory(space, profile, split, tracker, parent, run_params, progress)
    status = "FINISHED"
    try:
        _work(study, storage, space, todo, lock, objective, say, heartbeat_seconds)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end_study_run(parent, best_summary(study, space), status)
    return study


def note_precision(space: SearchSpace, profile: Profile, say: Callable) -> None:
    """One `Note:` line when the space's precision runs slower than float32 on this machine."""
    from sweep.tf_env import precision_note

    if note := precision_note(getattr(profile.apply(space.base), "precision", "float32")):
        say(f"Note: {note}.")


def load_split(
    space: SearchSpace, profile: Profile, source: DataSource, seed: int, say: Callable
) -> tuple[Split, int]:
    """The profile's seeded train/validation split of the source's training file (the space's
    train_size/val_size checked against it), announced with `say`, and the file's class count."""
    from sweep.data import subset_and_split

    images, labels = source.training()
    split = subset_and_split(
        images, labels, subset=profile.subset, val_fraction=profile.val_fraction, seed=seed
    )
    split.take(space.base.train_size, space.base.val_size)
    for p in space.params:
        for value in p.candidates():
            sizes = {k: v for k, v in p.overrides(value).items() if k in ("train_size", "val_size")}
            try:
                split.take(sizes.get("train_size"), sizes.get("val_size"))
            except SweepError as exc:
                raise SweepError(f"{space.path}: params.{p.name}: {exc}") from None
    say(
        f"Data: {source.name} ({source.location}), profile {profile.name}: "
        f"{len(split.x_train)} train / {len(split.x_val)} validation images"
    )
    return split, int(labels.max()) + 1


def study_run_params(
    study: str, space: SearchSpace, profile: Profile, source: DataSource, seed: int
) -> dict[str, Any]:
    """What every run of a study records about where it came from."""
    return {
        "study": study,
        "space_file": str(space.path),
        "profile": profile.name,
        "dataset": source.name,
        "seed": seed,
    }


def _work(study, storage, space, todo: Plan, lock, objective, say, heartbeat_seconds) -> None:
    """The worker loop: under the lock, fail stale trials and take the next one; run it.
    A worker starts at most as many trials as the budget had left when it started, so
    trials that keep failing cannot loop forever."""
    waiting_since, started = None, 0
    while started < todo.n_trials:
        with lock(), warnings.catch_warnings():
            # Optuna marks fail_stale_trials experimental, and warns that heartbeats are meant
            # for study.optimize: this loop sends them itself (heartbeat()).
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
            step = next_step(study, space, todo.budget)
            if step.point is not None:
                study.enqueue_trial(step.point)
            trial = study.ask() if step.action == "run" else None
        if step.action == "stop":
            return
        if trial is None:
            if waiting_since is None:
                waiting_since = time.monotonic()
                say(
                    f"Waiting for {step.busy} trial(s) running elsewhere to end (a trial whose "
                    f"worker died is retried after {(heartbeat_seconds or 0) * GRACE_FACTOR} s)"
                )
            time.sleep(min(5.0, heartbeat_seconds or 5.0))
            continue
        waiting_since, started = None, started + 1
        run_trial(study, storage, trial, objective)


def _retry_stale(tracker: Any, heartbeat_seconds: int, study: optuna.Study, trial) -> None:
    """A trial whose worker died: end its MLflow run as killed, then queue it again."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        reason = f"worker lost: no heartbeat for {heartbeat_seconds * GRACE_FACTOR} s"
        tracker.end_lost_run(run_id, reason)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def describe_best(study: optuna.Study, space: SearchSpace) -> str:
    counts = state_counts(study)
    text = (
        f"Study {space.study!r}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed"
    )
    summary = best_summary(study, space)
    key = f"best_{space.metric}"
    if key in summary:
        best = {k[5:]: v for k, v in summary.items() if k.startswith("best.")}
        shown = "  ".join(f"{k}={v}" for k, v in best.items())
        text += f"; best {space.metric} {summary[key]:.5f} (trial {summary['best_trial']}: {shown})"
    if OUTSIDE_METRIC in summary:
        text += f"; {kept_note(summary[OUTSIDE_METRIC])}"
    return text
