"""Conclusions generated from the numbers of a study; never hand-written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from reports.frames import best_trial, compared
from reports.statistics import (
    REAL,
    UNKNOWN,
    WITHIN_NOISE,
    Confirmation,
    Difference,
    noise,
    per_value,
    trend,
    winner_against_runner_up,
)
from reports.style import sci

# The 95% range of the difference of two single runs, in units of one run's noise: 1.96 x sqrt(2).
TWO_RUNS = 2.8


def one_factor_conclusion(
    trials: pd.DataFrame,
    param: str,
    order: Sequence[Any] = (),
    noise_elsewhere: tuple[str, float] | None = None,
) -> str:
    """Which value won, by how much, whether that is more than the seed-to-seed noise, the trend
    along the listed values, and what the winner cost in time and parameters. With one run per
    value the noise is unknown: `noise_elsewhere` (a study of the same store, its noise) is
    quoted instead, if there is one."""
    done = compared(trials)
    notes = _state_note(trials)
    if done.empty:
        return f"No complete trial yet, so no conclusion.{notes}"
    means = _value_means(done, param)
    diff = winner_against_runner_up(done, param)
    winner, won_value = means.iloc[0], means.index[0]
    own_noise = noise(done, param)
    if own_noise is not None:  # this study's own noise, not another's
        noise_elsewhere = None
    [won] = [s for s in per_value(done, param) if s.value == won_value]
    if won.n >= 2:
        text = (
            f"{param} = {won_value} reached the lowest mean val_loss, {sci(won.mean)} "
            f"(95% CI {sci(won.low)} to {sci(won.high)}, {won.n} runs)"
        )
    elif (means["n"] >= 2).any():
        text = f"{param} = {won_value} reached the lowest mean val_loss, {sci(won.mean)} (1 run)"
    else:
        text = f"{param} = {won_value} reached the lowest val_loss, {sci(winner['value'])}"
    if diff is None:
        return text + f"; it is the only value with a complete trial.{notes}"
    runner = means.iloc[1]
    text += f", {diff.percent:.1f}% below the runner-up {means.index[1]} ({sci(runner['value'])})"
    text += _cost(winner, runner) + "."
    text += " " + _verdict(diff, noise_elsewhere, own_noise is not None)
    if len(means) > 2:
        worst = means.iloc[-1]
        spread = (worst["value"] - winner["value"]) / winner["value"] * 100
        text += f" The worst, {means.index[-1]} ({sci(worst['value'])}), is {spread:.1f}% above it."
    found = trend(done, param, order) if order else None
    if found is not None:
        way = "falls" if found.falls else "rises"
        strength = "a significant trend" if found.significant else "not significant"
        text += (
            f" Along the listed values val_loss {way} (Spearman rho {found.rho:+.2f}, "
            f"p = {found.p:.2g}, {found.n} runs): {strength}."
        )
    by_time = means.sort_values("train_seconds")
    cheapest, cheapest_value = by_time.iloc[0], by_time.index[0]
    if cheapest_value != won_value and pd.notna(cheapest["train_seconds"]):
        loss = (cheapest["value"] - winner["value"]) / winner["value"] * 100
        text += (
            f" The fastest, {cheapest_value}, trained in {cheapest['train_seconds']:.1f} s "
            f"with a val_loss {loss:.1f}% higher."
        )
    if own_noise is not None:
        text += f" Seed-to-seed noise: {own_noise * 100:.1f}% (coefficient of variation)."
    return text + notes


def _verdict(
    diff: Difference, noise_elsewhere: tuple[str, float] | None, repeated: bool = False
) -> str:
    """Whether the winner's lead is real, in plain words with its interval."""
    if diff.verdict == REAL:
        return (
            f"The difference is {diff.low:.1f}% to {diff.high:.1f}% (95% CI, Welch p = "
            f"{diff.p:.2g}, {diff.winner.n} and {diff.runner.n} runs): a real difference."
        )
    if diff.verdict == WITHIN_NOISE:
        return (
            f"The difference is {diff.low:.1f}% to {diff.high:.1f}% (95% CI, Welch p = "
            f"{diff.p:.2g}, {diff.winner.n} and {diff.runner.n} runs): within the noise, "
            f"{diff.winner.value} and {diff.runner.value} cannot be told apart."
        )
    single = [str(s.value) for s in (diff.winner, diff.runner) if s.n < 2]
    if len(single) == 1 or repeated:  # other values have repeats: the noise is measured
        which = " and ".join(single)
        return (
            f"{which} {'has' if len(single) == 1 else 'have'} a single complete run, so "
            "whether the gap is more than the noise is untested; train more repeats "
            "(--repeats 3) to tell."
        )
    text = "With one run per value the seed-to-seed noise is unknown"
    if noise_elsewhere is not None:
        study, cv = noise_elsewhere
        text += (
            f"; study {study} of the same store measured {cv * 100:.1f}%, so a gap under "
            f"{cv * 100 * TWO_RUNS:.1f}% ({TWO_RUNS}x that: the 95% range of the difference "
            "of two single runs) may be noise"
        )
    return text + "; train repeats (--repeats 3) to tell."


def _value_means(done: pd.DataFrame, param: str) -> pd.DataFrame:
    """Per value: the mean best val_loss, training time and parameters, and the runs; best
    value first."""
    grouped = done.groupby(param, sort=False)
    means = grouped[["value", "train_seconds", "param_count"]].mean()
    means["n"] = grouped.size()
    return means.sort_values("value")  # indexed by value (a row of numbers would make 3 3.0)


def _cost(winner: pd.Series, other: pd.Series) -> str:
    """The winner's training time and parameter count as multiples of `other`'s."""
    parts = []
    for column, unit in (("train_seconds", "training time"), ("param_count", "parameters")):
        a, b = winner.get(column), other.get(column)
        if pd.notna(a) and pd.notna(b) and b:
            parts.append(f"{a / b:.2f}x the {unit}")
    return f", at {' and '.join(parts)} of the runner-up" if parts else ""


def _state_note(trials: pd.DataFrame) -> str:
    """The trials left out of a comparison because they did not complete."""
    counts = trials["state"].value_counts()
    extra = [f"{counts[s]} {s}" for s in ("pruned", "failed", "running") if counts.get(s, 0)]
    return f" Not compared: {', '.join(extra)} trial(s)." if extra else ""


def joint_conclusion(
    trials: pd.DataFrame,
    importances: dict[str, Any],
    metric: str = "val_loss",
    maximize: bool = False,
) -> str:
    """The best trial, the most important parameter, how many trials the pruner stopped."""
    best = best_trial(trials, maximize)
    if best is None:
        return "No complete trial yet."
    text = f"Best trial #{int(best['number'])} reached {metric} {sci(best['value'])}"
    if importances:
        top = max(importances, key=importances.get)
        text += f"; the most important parameter was {top} ({importances[top]:.2f} of the total)"
    pruned = int((trials["state"] == "pruned").sum())
    if pruned:
        text += f"; {pruned} of {len(trials)} trials were pruned early"
    return text + "."


def confirmation_conclusion(
    found: Confirmation, expected: int, metric: str = "val_loss", maximize: bool = False
) -> str:
    """Whether the search's winner holds on new seeds: its new mean against its search value,
    and the best of the confirmed configurations against the next, with the interval.
    `expected`: how many confirmation runs the study asked for."""
    runs = sum(c.runs.n for c in found.confirmed)
    text = (
        "The search's best configurations were retrained with new seeds "
        f"({runs} of {expected} runs complete)."
    )
    winner = found.winner
    if winner is None:
        return (
            text
            + " The search's winner has no complete confirmation run (with a finite value) yet."
        )
    better = "higher" if maximize else "lower"
    text += f" Its winner, trial #{winner.number} ({metric} {sci(winner.searched)} in the search),"
    text += f" averages {sci(winner.runs.mean)} on {_runs(winner.runs.n)}"
    if winner.runs.n >= 2:
        text += f" (95% CI {sci(winner.runs.low)} to {sci(winner.runs.high)})"
    if winner.runs.mean:
        lucky = (winner.searched - winner.runs.mean) / winner.runs.mean * 100
        lucky = lucky if maximize else -lucky
        text += (
            f"; its search run was {abs(lucky):.1f}% {'better' if lucky > 0 else 'worse'} than "
            "that (a search's winner is picked partly for its luck)"
        )
    text += "."
    diff = found.difference
    if diff is None:
        return text + " With one configuration confirmed there is nothing to compare it with."
    if not found.holds:
        diff = found.against_winner or diff
    interval = (
        f"{diff.percent:.1f}%, 95% CI {diff.low:.1f}% to {diff.high:.1f}%, Welch p = "
        f"{diff.p:.2g}, {diff.winner.n} and {diff.runner.n} runs"
    )
    best, runner = f"#{diff.winner.value}", f"#{diff.runner.value}"
    if diff.verdict == UNKNOWN:
        return text + (
            f" {best} or {runner} has fewer than two complete new runs, so whether the winner "
            "holds is untested."
        )
    if found.holds:
        if diff.verdict == REAL:
            return text + (
                f" The winner holds: on the new seeds it is {better} than the next, {runner}, "
                f"by {interval}: a real difference."
            )
        return text + (
            f" The winner holds on the means, but its lead over {runner} ({interval}) is "
            "within the noise: the two cannot be told apart."
        )
    rank = next(c.rank for c in found.confirmed if c.number == diff.winner.value)
    if diff.verdict == REAL:
        return text + (
            f" The winner does not hold: on the new seeds {best} (search rank {rank}) is "
            f"{better} than it by {interval}: a real difference."
        )
    return text + (
        f" On the new seeds {best} (search rank {rank}) averages {better} than the winner, by "
        f"{interval}: within the noise, the two cannot be told apart, so the search's pick is "
        "not confirmed either way."
    )


def _runs(n: int) -> str:
    return "1 new seed" if n == 1 else f"{n} new seeds"
