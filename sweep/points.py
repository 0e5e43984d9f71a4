"""Recorded trials against the space their study lists (SearchSpace.listed(), recorded on the
study): which points are still the space's, and how a run or a report speaks of the others.
Shared by the sweep and the report, so neither imports the other."""

from __future__ import annotations

import hashlib
from typing import Any

# The parameter a grid trial of a space with `repeats: N` records its repeat in (0 to N-1): it
# picks the trial's seeds and is part of the trial's point, never of the configuration. A trial
# without it (a study begun with one run per point) is repeat 0.
REPEAT = "repeat"

# The user attr of a trial that retrains one of a drawn study's best configurations with a new
# seed (sweep.confirm), and how many new seeds each of those configurations gets.
CONFIRMS = "confirms"
CONFIRM_SEEDS = 3


def key(params: dict[str, Any]) -> tuple:
    """A point with its repeat as a hashable key (the same parameters and values, and the same
    repeat, are the same trial's point)."""
    return tuple(sorted({REPEAT: 0, **params}.items()))


def repeat_of(params: dict[str, Any]) -> int:
    """The repeat a trial's stored params record (0 when they record none)."""
    return int(params.get(REPEAT, 0))


def trial_seed(seed: int, repeat: int) -> int:
    """The weight-initialisation and shuffling seed of a point's `repeat`: the sweep's own seed
    for repeat 0 (so one run per point trains as it always has), and for the others a seed
    derived from both, the same on every machine. The data split keeps the sweep's seed."""
    if repeat == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def factors(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params without its repeat: the values of the space's parameters."""
    return {name: value for name, value in params.items() if name != REPEAT}


def is_listed(point: dict[str, Any], listed: dict[str, Any]) -> bool:
    """Whether a trial's stored params are a point of `listed` (SearchSpace.listed(), as a
    study records it): the same names, each a listed label or inside a listed range. The
    repeat is no parameter of the space: any repeat of a listed point is listed."""
    point = factors(point)
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


# The artifact in which each autoencoder trial's run keeps the same validation images above its
# reconstructions of them (sweep.training writes it, the report shows it).
RECONSTRUCTIONS = "reconstructions.png"

# The summary metric of a study's trials of points its space no longer lists (an edited space):
# kept in both stores, not counted towards the budget or the best trial.
OUTSIDE_METRIC = "n_outside_space"


def kept_note(n: int) -> str:
    """What a run says of its study's trials of points the space no longer lists."""
    if n == 1:
        return "1 trial of a point no longer in the space is kept and not counted"
    return f"{n} trials of points no longer in the space are kept and not counted"
