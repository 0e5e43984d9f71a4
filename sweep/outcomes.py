"""Finished trials of either backend -> the parent run's summary and a run's closing line: the
space's trials by state and the best of them; trials of points the space no longer lists are
counted apart (kept in both stores, never the best)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sweep.points import OUTSIDE_METRIC, kept_note
from sweep.space import SearchSpace, format_value


class Finished(Protocol):
    """What a summary reads of a trial (an Outcome, or a keras-tuner TrialRecord)."""

    number: int
    state: str
    params: dict[str, Any]
    run_id: str | None
    in_space: bool

    @property
    def value(self) -> float | None: ...


@dataclass(frozen=True)
class Outcome:
    """One trial of an Optuna study as a summary reads it."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None = None
    in_space: bool = True


FINISHED_STATES = ("complete", "pruned", "failed")


def summarise(trials: Iterable[Finished], space: SearchSpace) -> dict[str, Any]:
    """The given trials by state, how many finished ones are of points the space dropped, and
    the best of the space's complete trials."""
    trials = list(trials)
    counts = Counter(t.state for t in trials)
    summary: dict[str, Any] = {
        "n_complete": counts["complete"],
        "n_pruned": counts["pruned"],
        "n_failed": counts["failed"],
    }
    if outside := sum(not t.in_space and t.state in FINISHED_STATES for t in trials):
        summary[OUTSIDE_METRIC] = outside
    complete = [t for t in trials if t.in_space and t.state == "complete"]
    if complete:
        pick = max if space.direction == "maximize" else min
        best = pick(complete, key=lambda t: t.value)
        summary[f"best_{space.metric}"] = best.value
        summary["best_trial"] = str(best.number)
        for key, value in space.decode(best.params).items():
            summary[f"best.{key}"] = str(format_value(value))
        if best.run_id:
            summary["best_run_id"] = best.run_id
    return summary


def describe(summary: dict[str, Any], space: SearchSpace, study: str) -> str:
    """One line: the study's trials by state, its best trial, the trials it keeps apart."""
    text = (
        f"Study {study!r}: {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
        f"{summary['n_failed']} failed"
    )
    key = f"best_{space.metric}"
    if key in summary:
        best = {k[5:]: v for k, v in summary.items() if k.startswith("best.")}
        shown = "  ".join(f"{k}={v}" for k, v in best.items())
        text += f"; best {space.metric} {summary[key]:.5f} (trial {summary['best_trial']}: {shown})"
    if OUTSIDE_METRIC in summary:
        text += f"; {kept_note(summary[OUTSIDE_METRIC])}"
    return text
