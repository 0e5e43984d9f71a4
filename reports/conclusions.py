"""Conclusions generated from the numbers of a study; never hand-written."""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports.frames import best_trial, compared
from reports.style import sci


def one_factor_conclusion(trials: pd.DataFrame, param: str) -> str:
    """Which value won, by how much, and what it cost in time and parameters."""
    done = compared(trials)
    notes = _state_note(trials)
    if done.empty:
        return f"No complete trial yet, so no conclusion.{notes}"
    best_per_value = done.sort_values("value").drop_duplicates(param)
    winner = best_per_value.iloc[0]
    text = f"{param} = {winner[param]} reached the lowest val_loss, {sci(winner['value'])}"
    if len(best_per_value) == 1:
        return text + f"; it is the only value with a complete trial.{notes}"
    runner = best_per_value.iloc[1]
    gap = (runner["value"] - winner["value"]) / runner["value"] * 100
    text += f", {gap:.1f}% below the runner-up {runner[param]} ({sci(runner['value'])})"
    text += _cost(winner, runner) + "."
    worst = best_per_value.iloc[-1]
    if len(best_per_value) > 2:
        spread = (worst["value"] - winner["value"]) / worst["value"] * 100
        text += f" The worst, {worst[param]} ({sci(worst['value'])}), is {spread:.1f}% above it."
    cheapest = best_per_value.sort_values("train_seconds").iloc[0]
    if cheapest[param] != winner[param] and pd.notna(cheapest["train_seconds"]):
        loss = (cheapest["value"] - winner["value"]) / winner["value"] * 100
        text += (
            f" The fastest, {cheapest[param]}, trained in {cheapest['train_seconds']:.1f} s "
            f"with a val_loss {loss:.1f}% higher."
        )
    if gap < 2:
        text += " A gap under 2% from one run each is within what a different seed can change."
    return text + notes


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
