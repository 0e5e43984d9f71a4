"""Recorded trials against the space their study lists (SearchSpace.listed(), recorded on the
study): which points are still the space's, and how a run or a report speaks of the others.
Shared by the sweep and the report, so neither imports the other."""

from __future__ import annotations

from typing import Any


def key(params: dict[str, Any]) -> tuple:
    """A point as a hashable key (the same parameters and values are the same point)."""
    return tuple(sorted(params.items()))


def is_listed(point: dict[str, Any], listed: dict[str, Any]) -> bool:
    """Whether a trial's stored params are a point of `listed` (SearchSpace.listed(), as a
    study records it): the same names, each a listed label or inside a listed range."""
    if set(point) != set(listed):
        return False
    for name, allowed in listed.items():
        value = point[name]
        if isinstance(allowed, dict):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not allowed["low"] <= value <= allowed["high"]:
                return False
        elif value not in allowed:
            return False
    return True


# The summary metric of a study's trials of points its space no longer lists (an edited space):
# kept in both stores, not counted towards the budget or the best trial.
OUTSIDE_METRIC = "n_outside_space"


def kept_note(n: int) -> str:
    """What a run says of its study's trials of points the space no longer lists."""
    if n == 1:
        return "1 trial of a point no longer in the space is kept and not counted"
    return f"{n} trials of points no longer in the space are kept and not counted"
