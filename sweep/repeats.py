"""Repeats: how many times each grid point of a space trains, with seeds of its own (the
repeat's number picks them: sweep.points.trial_seed) on the same data. The file's `repeats:`
and `--repeats` are read here; the grid's points carry the repeat (SearchSpace.grid_points)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from models.config import short
from sweep.space import MAX_GRID_POINTS, SpaceError

if TYPE_CHECKING:
    from sweep.space import SearchSpace

MAX_REPEATS = 100


def parse_repeats(raw: Any, sampler: str, where: str) -> int:
    """How many times each grid point trains (its seeds differ, its data do not)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_REPEATS:
        allowed = f"a whole number from 1 to {MAX_REPEATS}"
        raise SpaceError(f"{where} must be {allowed}, got {short(raw)}")
    if raw > 1 and sampler != "grid":
        raise SpaceError(
            f"{where} {raw} needs sampler: grid, whose points each train several times; a "
            f"{sampler} study draws its points (give it more n_trials instead)"
        )
    return raw


def with_repeats(space: SearchSpace, repeats: int | None) -> SearchSpace:
    """The space with `--repeats` (None: as the file says). A budget of the whole grid
    stays the whole grid; a smaller one is kept."""
    if repeats is None:
        return space
    repeats = parse_repeats(repeats, space.sampler, "--repeats")
    if space.sampler != "grid":
        return space  # repeats 1: as it was
    points = len(space.grid_points()) // space.repeats
    if points * repeats > MAX_GRID_POINTS:
        raise SpaceError(
            f"--repeats {repeats}: {points} points x {repeats} is more than {MAX_GRID_POINTS:,} "
            "trials; ask for fewer repeats"
        )
    whole = space.n_trials >= points * space.repeats
    n_trials = points * repeats if whole else min(space.n_trials, points * repeats)
    return dataclasses.replace(space, repeats=repeats, n_trials=n_trials)
