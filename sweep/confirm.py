"""Confirmation of a drawn (TPE, random) study: `confirm: K` retrains the K best configurations
of its search with CONFIRM_SEEDS new seeds each, once the search's budget is spent, so the
report can say whether the search's winner holds on seeds it was not picked on.

A confirmation trial is queued with the configuration's stored params and a repeat (1 to
CONFIRM_SEEDS: its seed, sweep.points.trial_seed) and the user attr CONFIRMS; it is never
pruned and never counts towards the search's budget. The K best are taken from the complete
search trials as they stand, so extending the search confirms its new best ones too."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.config import short
from sweep.points import CONFIRM_SEEDS, CONFIRMS, REPEAT, factors, key
from sweep.space import SpaceError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from sweep.space import SearchSpace

MAX_CONFIRM = 20
ATTEMPTS = 2  # a confirmation run that fails is tried once more in the same run


def parse_confirm(raw: Any, sampler: str, n_trials: int | None, where: str) -> int:
    """How many of the search's best configurations are retrained (0: none)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_CONFIRM:
        raise SpaceError(
            f"{where} must be a whole number from 0 to {MAX_CONFIRM}, got {short(raw)}"
        )
    if raw and sampler == "grid":
        raise SpaceError(
            f"{where} {raw} needs a drawn study (sampler: tpe or random); a grid trains each "
            "point several times with repeats: N instead"
        )
    if n_trials is not None and raw > n_trials:
        raise SpaceError(
            f"{where} {raw} is more than the study's {n_trials} trials; confirm at most that many"
        )
    return raw


def with_confirm(space: SearchSpace, confirm: int | None) -> SearchSpace:
    """The space with `--confirm K` (None: as the file says)."""
    if confirm is None:
        return space
    confirm = parse_confirm(confirm, space.sampler, space.n_trials, "--confirm")
    return dataclasses.replace(space, confirm=confirm)


def is_confirmation(trial: FrozenTrial) -> bool:
    """Whether a trial retrains one of the search's best configurations."""
    return bool(trial.user_attrs.get(CONFIRMS))


def user_attrs(space: SearchSpace, point: dict[str, Any]) -> dict[str, Any] | None:
    """What a trial queued with `point` records first: CONFIRMS where it is a confirmation (a
    drawn study's point with a repeat; a grid's repeats are its points)."""
    return {CONFIRMS: True} if space.sampler != "grid" and REPEAT in point else None


def best_configurations(trials: Sequence[FrozenTrial], space: SearchSpace) -> list[dict]:
    """The stored params of the search's `space.confirm` best distinct configurations (complete
    search trials of the space's points, best first; the first trial of a configuration TPE
    drew twice stands for it)."""
    from optuna.trial import TrialState

    from sweep.study import in_space

    search = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and not is_confirmation(t)
        and in_space(t, space)
    ]
    sign = -1 if space.direction == "maximize" else 1
    best: dict[tuple, dict[str, Any]] = {}
    for t in sorted(search, key=lambda t: (sign * t.value, t.number)):
        best.setdefault(key(factors(t.params)), factors(t.params))
        if len(best) == space.confirm:
            break
    return list(best.values())


def targets(trials: Sequence[FrozenTrial], space: SearchSpace) -> list[dict[str, Any]]:
    """Every confirmation trial the study needs now: each best configuration with each new
    seed, every configuration's first seed before any second."""
    if not space.confirm:
        return []
    configs = best_configurations(trials, space)
    return [{**c, REPEAT: r} for r in range(1, CONFIRM_SEEDS + 1) for c in configs]


def taken(trials: Sequence[FrozenTrial]) -> set[tuple]:
    """The confirmations not to start now: running or done, or failed ATTEMPTS times."""
    from collections import Counter

    from optuna.trial import TrialState

    from sweep.study import point

    mine = [t for t in trials if is_confirmation(t) and t.state != TrialState.WAITING]
    failed = Counter(key(point(t)) for t in mine if t.state == TrialState.FAIL)
    live = {key(point(t)) for t in mine if t.state != TrialState.FAIL}
    return live | {k for k, n in failed.items() if n >= ATTEMPTS}


def pending(trials: Sequence[FrozenTrial], space: SearchSpace) -> list[dict[str, Any]]:
    """The targets no complete (or pruned) confirmation trial has run yet."""
    from sweep.study import DONE_STATES, point

    done = {key(point(t)) for t in trials if t.state in DONE_STATES and is_confirmation(t)}
    return [p for p in targets(trials, space) if key(p) not in done]
