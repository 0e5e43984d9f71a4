"""The worker loop of an Optuna study, shared by any number of workers: under the study lock
each takes what sweep.budget says comes next, sends heartbeats while its trial runs, retries a
trial whose worker died, and tells the storage how a trial ended; one loop per slot. Schedules;
the objective (sweep.recipe) trains."""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep import confirm
from sweep.budget import Plan, Step, next_step
from sweep.signals import StopToken, watching
from sweep.space import SearchSpace
from sweep.storage import GRACE_FACTOR

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30
MAX_RETRY = 2
Callback = Callable[[optuna.Study, FrozenTrial], None]


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
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as exc:  # noqa: BLE001 - a busy store: the next beat may pass
                log.warning("    [t%d] heartbeat not recorded: %s", trial.number, exc)
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
                log.info("    [t%d] -> failed: %s", trial.number, reason.splitlines()[0][:300])
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except ValueError as exc:
        # Another worker saw no heartbeat from this one for the grace period, failed the trial
        # and queued it again; the queued copy will run, so this result is dropped.
        log.info(
            "    trial %d was already ended elsewhere (%s); its queued retry will run it again",
            trial.number,
            exc,
        )


class Shared:
    """What the slots of one sweep process share: how many trials the run may still start (as
    many as the budget had left when it began, so trials that keep failing cannot loop forever;
    a confirmation's starts counted apart, each run twice at most), how many are running now,
    and the stop the main thread signals on Ctrl-C or SIGTERM."""

    def __init__(self, limit: int, confirming: int = 0) -> None:
        self.limit, self.started, self.running = limit, 0, 0
        self.confirm_limit, self.confirmed = confirming * confirm.ATTEMPTS, 0
        self.stop = StopToken()
        self.failure: BaseException | None = None
        self.taking = threading.Lock()  # the slots of this process take trials one at a time
        self._lock = threading.Lock()

    def claim(self, confirming: bool = False) -> bool:
        """Take one of the run's trial starts (or confirmation starts), if any is left."""
        with self._lock:
            if confirming:
                if self.confirmed >= self.confirm_limit:
                    return False
                self.confirmed += 1
                return True
            if self.started >= self.limit:
                return False
            self.started += 1
            return True

    @contextmanager
    def one_running(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


def process_name() -> str:
    """This process as trials record who runs them: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Worker:
    """One worker on a study: takes trials under the study lock while its share of the budget
    lasts. A sweep process runs one worker per slot, all sharing `shared`; `order` is the grid's
    points in the order to start them. `callbacks(study, trial)` run after each trial ends, as
    in study.optimize; a callback (or the objective) may call study.stop() to end every slot's
    loop after its trial."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    space: SearchSpace
    todo: Plan
    lock: Callable[[], Any]
    heartbeat_seconds: int | None = HEARTBEAT_SECONDS
    callbacks: Sequence[Callback] = ()
    shared: Shared | None = None
    order: tuple[dict[str, Any], ...] = ()
    slot: int = 0

    def run(self, objective: Callable[[optuna.Trial], float]) -> None:
        """The loop: under the lock, fail stale trials and take the next one; run it. Trials
        running elsewhere (other processes) are waited for, since one may fail and need a retry;
        when only this process's other slots are busy, this slot is done."""
        shared = self.shared or Shared(
            self.todo.n_trials - self.todo.confirming, self.todo.confirming
        )
        waiting = False
        with _in_loop(self.study):
            while not self.study._stop_flag:
                shared.stop.check()
                step, trial = self._take(shared)
                if step.action == "stop":
                    return
                if trial is None:
                    if not step.elsewhere:
                        return
                    if not waiting:
                        _log_wait(step, (self.heartbeat_seconds or 0) * GRACE_FACTOR)
                    waiting = True
                    shared.stop.wait(min(5.0, self.heartbeat_seconds or 5.0))
                    continue
                waiting = False
                with shared.one_running():
                    run_trial(self.study, self.storage, trial, objective)
                if self.callbacks:
                    frozen = self.storage.get_trial(trial._trial_id)
                    for callback in self.callbacks:
                        callback(self.study, frozen)

    def _take(self, shared: Shared) -> tuple[Step, optuna.Trial | None]:
        here = process_name()
        # The store lock serialises processes (and threads, where it is a file or an advisory
        # lock); `taking` serialises this process's slots whatever the store.
        with shared.taking, self.lock(), warnings.catch_warnings():
            shared.stop.check()
            # Optuna marks fail_stale_trials experimental, and warns that heartbeats are meant
            # for study.optimize: this loop sends them itself (heartbeat()).
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(self.study)
            step = next_step(self.study, self.space, self.todo.budget, self.order, here + "/")
            if step.action != "run":
                return step, None
            if not shared.claim(step.confirms):
                return Step("stop"), None
            if step.point is not None:
                attrs = confirm.user_attrs(self.space, step.point)
                self.study.enqueue_trial(step.point, user_attrs=attrs)
            trial = self.study.ask()
            # Recorded under the lock, so another slot deciding next sees whose trial it is.
            trial.set_user_attr("worker", f"{here}/{self.slot}")
            return step, trial


def _log_wait(step: Step, grace: int) -> None:
    """Why a slot waits (once per wait)."""
    if step.soon:
        log.info(
            "Waiting for the search's last %d trial(s) to end, then confirming its best",
            step.busy,
        )
        return
    log.info(
        "Waiting for %d trial(s) running elsewhere to end (a trial whose worker died is "
        "retried after %d s)",
        step.elsewhere,
        grace,
    )


def run_slots(
    workers: Sequence[Worker], objectives: Sequence[Callable], in_processes: bool = False
) -> None:
    """Run the workers of one process's slots at once: the first in this (the main) thread, the
    others in threads of their own, each training in trial processes of its own. Ctrl-C or
    SIGTERM reaches the main thread: every slot's running trial is then ended and recorded as
    stopped, and the interruption raised here once they are. An unexpected error in one slot
    lets the others finish their trials, then is raised here. `in_processes`: every trial
    trains in a process of its own (the only way several slots run), whose wait checks the
    stop."""
    study = workers[0].study
    shared = workers[0].shared
    assert shared is not None and all(w.shared is shared for w in workers)
    study._stop_flag = False
    threads = [
        threading.Thread(target=_slot_thread, args=(w, o), name=f"slot-{w.slot}", daemon=True)
        for w, o in zip(workers[1:], objectives[1:], strict=True)
    ]
    # Where every trial trains in a process of its own, each slot checks the stop while it
    # waits for it, so a signal only marks the stop: each slot, the main one too, then ends at
    # its next check, never in the middle of a store's call (an interruption inside an MLflow
    # request can leave its connection broken, and the trial's record then fails with it).
    # A trial that trains in this process has no such check: the signal raises where it lands.
    with watching(shared.stop, deferred=in_processes or len(workers) > 1):
        try:
            for thread in threads:
                thread.start()
            workers[0].run(objectives[0])
            _join(threads, shared.stop)
        except KeyboardInterrupt as exc:
            shared.stop.stop(exc)
            _join(threads)
            raise
        except BaseException:
            study._stop_flag = True  # the other slots finish their trials, then stop
            try:
                _join(threads, shared.stop)
            except KeyboardInterrupt as exc:
                shared.stop.stop(exc)
                _join(threads)
            raise
    if shared.failure is not None:
        raise shared.failure


def _slot_thread(worker: Worker, objective: Callable) -> None:
    try:
        worker.run(objective)
    except KeyboardInterrupt:
        pass  # the main thread stopped the run; this slot's trial is recorded as stopped
    except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
        worker.study._stop_flag = True
        log.error("Slot %d stopped: %s: %s", worker.slot, type(exc).__name__, exc)
        if worker.shared is not None and worker.shared.failure is None:
            worker.shared.failure = exc


def _join(threads: Sequence[threading.Thread], stop: StopToken | None = None) -> None:
    """Wait for the threads, in short joins, so Ctrl-C reaches the main thread at once (or the
    `stop` it marked, which is raised here)."""
    for thread in threads:
        while thread.is_alive():
            if stop is not None:
                stop.check()
            thread.join(0.2)


@contextmanager
def _in_loop(study: optuna.Study) -> Iterator[None]:
    """Let study.stop() work inside this loop as inside study.optimize (Optuna keeps the flag
    per thread: optuna/study/_optimize.py sets it the same way; run_slots clears the stop)."""
    study._thread_local.in_optimize_loop = True
    try:
        yield
    finally:
        study._thread_local.in_optimize_loop = False


def retry_stale(tracker: Any, heartbeat_seconds: int, study: optuna.Study, trial) -> None:
    """A trial whose worker died: end its MLflow run as killed, then queue it again."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        reason = f"worker lost: no heartbeat for {heartbeat_seconds * GRACE_FACTOR} s"
        tracker.end_lost_run(run_id, reason)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)
