"""The report's DataFrames: one builder that gives every frame of store data its exact
columns, and the selections of trials that figures, conclusions and pages share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


def frame(rows: Iterable[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """`rows` as a DataFrame with exactly `columns` (name -> dtype), NaN where a row lacks a
    value or holds one of another type. Every frame of store data is built here, so no figure
    or table meets a missing column."""
    table = pd.DataFrame(list(rows), columns=list(columns))
    return table.assign(**{name: _typed(table[name], dtype) for name, dtype in columns.items()})


def _typed(column: pd.Series, dtype: str) -> pd.Series:
    """`column` as `dtype`; 'infer' keeps the type its values share (a parameter's)."""
    if dtype == "infer":
        return column.infer_objects()
    if dtype == "float64":
        return pd.to_numeric(column, errors="coerce").astype(dtype)
    return column.astype(dtype)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials whose state is complete."""
    return trials[trials["state"] == "complete"]


def compared(trials: pd.DataFrame) -> pd.DataFrame:
    """The complete trials with a value: the ones a study's figures and conclusions compare."""
    return completed(trials).dropna(subset=["value"])


def best_trial(trials: pd.DataFrame, maximize: bool = False) -> pd.Series | None:
    """The compared trial with the best value, or None before one has completed."""
    done = compared(trials)
    if done.empty:
        return None
    return done.loc[done["value"].idxmax() if maximize else done["value"].idxmin()]
