"""What is left of a study and what comes next, decided from what every worker has recorded:
the study-wide budget (plan), the next step of a worker (next_step: a grid point, a queued
trial, a confirmation of the search's best, wait or stop), the grid's points in the order to
start them (by_cost). Pure decisions over the study's trials; sweep.scheduler acts on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep import confirm
from sweep.errors import SweepError
from sweep.points import CONFIRM_SEEDS, key, repeat_of
from sweep.space import SearchSpace
from sweep.study import BUSY_STATES, DONE_STATES, in_space, point


@dataclass(frozen=True)
class Plan:
    """What this run does: `n_trials` new trials, the first ones re-running `retry` points;
    `confirming` of them retrain a drawn study's best (sweep.confirm), whose starts the run
    counts apart from the search's."""

    budget: int
    done: int
    n_trials: int
    retry: tuple[dict[str, Any], ...] = ()
    confirming: int = 0


def plan(study: optuna.Study | None, space: SearchSpace, budget: int | None = None) -> Plan:
    """How many trials are left of the study-wide budget (`study` None: not created yet), and
    of a drawn study's confirmation (sweep.confirm; at most all of it while the search runs).
    Only trials of points the space lists now count; in a grid, points already complete or
    pruned are never run again; points (and confirmations) whose only trials failed are queued
    again."""
    budget = budget or space.n_trials
    trials = study.get_trials(deepcopy=False) if study is not None else []
    done_trials = [t for t in trials if t.state in DONE_STATES and in_space(t, space)]
    if space.sampler != "grid":
        search = [t for t in done_trials if not confirm.is_confirmation(t)]
        left = max(0, budget - len(search))
        if not space.confirm:
            return Plan(budget, len(search), left)
        if left:  # the best configurations are known once the search is done: at most all
            most = space.confirm * CONFIRM_SEEDS
            return Plan(budget, len(search), left + most, confirming=most)
        pending = confirm.pending(trials, space)
        failed = {key(point(t)) for t in trials if t.state == TrialState.FAIL}
        retry = tuple(p for p in pending if key(p) in failed)
        return Plan(budget, len(search), len(pending), retry, len(pending))
    if budget > len(space.grid_points()):
        raise SweepError(
            f"--n-trials {budget} is more than the {len(space.grid_points())} points of the "
            f"grid in {space.path}"
        )
    # Only the points of the grid as it is now count: a study run with more repeats keeps its
    # other repeats (their data stay in the stores) without them standing in for points.
    grid = {key(p) for p in space.grid_points()}
    done_points = {key(point(t)) for t in done_trials} & grid
    failed_points = {key(point(t)) for t in trials if t.state == TrialState.FAIL} & grid
    retry = [p for p in space.grid_points() if key(p) in failed_points - done_points]
    left = max(0, budget - len(done_points))
    return Plan(budget, len(done_points), left, tuple(retry[:left]))


def queue_retries(study: optuna.Study, space: SearchSpace, todo: Plan) -> None:
    """Grid points (and confirmations) whose trials all failed get one more try when a worker
    starts, unless another worker has run, is running or has queued them since the plan."""
    states = (*BUSY_STATES, *DONE_STATES)
    taken = {key(point(t)) for t in study.get_trials(deepcopy=False, states=states)}
    for retry in todo.retry:
        if key(retry) not in taken:
            study.enqueue_trial(retry, user_attrs=confirm.user_attrs(space, retry))


@dataclass(frozen=True)
class Step:
    """What a worker does next: "run" (a queued trial, or `point` queued first), "wait" for
    running trials (`busy`, `elsewhere` of them in other processes: they may fail and need a
    retry; `soon`: the confirmation starts when the search's last trials end), or "stop".
    `confirms`: the trial to run retrains one of the search's best."""

    action: str
    point: dict[str, Any] | None = None
    busy: int = 0
    elsewhere: int = 0
    soon: bool = False
    confirms: bool = False


def next_step(
    study: optuna.Study,
    space: SearchSpace,
    budget: int,
    order: Sequence[dict[str, Any]] | None = None,
    here: str = "",
) -> Step:
    """Decide under the study lock, from what every worker has recorded: completed and pruned
    trials count towards the budget; running and queued ones are taken. A grid point that is
    done, running, queued or failed is not queued here (a worker's start queues failed points
    once more, see queue_retries); the first free one in `order` is (default: the file's order).
    A drawn study's confirmation starts when its search's budget is done (a confirmation that
    failed once is tried again at once). Running trials whose worker attr starts with `here`
    are this process's own."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in DONE_STATES and in_space(t, space)]
    busy = [t for t in trials if t.state in BUSY_STATES]
    if space.sampler == "grid":
        grid = {key(p) for p in space.grid_points()}
        done_grid = {key(point(t)) for t in done} & grid  # this grid's points, as plan() counts
        if len(done_grid) >= budget:
            return Step("stop")
        if any(t.state == TrialState.WAITING for t in trials):
            return Step("run")
        taken = {key(point(t)) for t in trials if t.state != TrialState.WAITING}
        if len(done_grid) + len(busy) < budget:
            for candidate in order or space.grid_points():
                if key(candidate) not in taken:
                    return Step("run", candidate)
    else:
        searched = sum(not confirm.is_confirmation(t) for t in done)
        # The confirmation starts once the search's budget is done, from its best trials then.
        pending = confirm.pending(trials, space) if searched >= budget else []
        if searched >= budget and not pending:
            return Step("stop")
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if waiting:  # Optuna runs the oldest queued trial first
            return Step("run", confirms=confirm.is_confirmation(waiting[0]))
        searching = sum(not confirm.is_confirmation(t) for t in busy)
        if searched + searching < budget:
            return Step("run")
        taken = confirm.taken(trials)
        for candidate in pending:
            if key(candidate) not in taken:
                return Step("run", candidate, confirms=True)
        if space.confirm and searched < budget:  # its best are known once these end
            return Step("wait", busy=len(busy), elsewhere=len(busy), soon=True)
    running = [t for t in busy if t.state == TrialState.RUNNING]
    elsewhere = [t for t in running if not str(t.user_attrs.get("worker", "")).startswith(here)]
    return Step("wait", busy=len(busy), elsewhere=len(elsewhere)) if busy else Step("stop")


def by_cost(
    points: Sequence[dict[str, Any]], cost: Callable[[dict[str, Any]], float | None]
) -> tuple[dict[str, Any], ...]:
    """The grid's points, most expensive first within each repeat (every point's repeat 0
    before any repeat 1; a stable sort: equal or unknown costs keep the file's order), so the
    longest trial starts first instead of running alone at the end."""
    costs = [cost(p) for p in points]
    if any(c is None for c in costs):
        return tuple(points)
    ranked = sorted(range(len(points)), key=lambda i: (repeat_of(points[i]), -costs[i]))
    return tuple(points[i] for i in ranked)
