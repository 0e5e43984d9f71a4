"""How sure a study's numbers are: per value, the mean best val_loss with its 95% confidence
interval; the winner against the runner-up (Welch's t); the trend over ordered values
(Spearman); the seed-to-seed noise (coefficient of variation); one factor's effect size.

Input is the compared trials of one study (reports.frames.compared): one row per trial, the
factor's value in column `param` and the best val_loss in `value`, the repeats of a value being
rows with the same value. Pure: numbers in, dataclasses out; the words are conclusions.py's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
BOOTSTRAP_RESAMPLES = 2000

# Verdicts
REAL = "real"
WITHIN_NOISE = "within noise"
UNKNOWN = "noise unknown"


@dataclass(frozen=True)
class ValueStats:
    """One value's runs: how many, their mean and standard deviation, and the 95% CI of the
    mean (NaN with one run: its noise is unknown)."""

    value: Any
    n: int
    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """The runner-up's mean above the winner's, in % of the runner-up's mean, with its 95% CI
    and Welch's p; `verdict` is REAL when the CI excludes 0, WITHIN_NOISE when not, UNKNOWN
    when either value has a single run."""

    winner: ValueStats
    runner: ValueStats
    percent: float
    low: float
    high: float
    p: float
    verdict: str


@dataclass(frozen=True)
class Trend:
    """Spearman's rho between a value's position in the declared order and the runs' val_loss
    (negative: val_loss falls along the order), over `n` runs; significant when p < 0.05."""

    rho: float
    p: float
    n: int

    @property
    def significant(self) -> bool:
        return self.p < ALPHA

    @property
    def falls(self) -> bool:
        return self.rho < 0


@dataclass(frozen=True)
class Effect:
    """How much a factor moves val_loss: the spread of its value means (largest less smallest)
    relative to the grand mean, in %, with a bootstrap 95% CI, and Welch's ANOVA p across the
    values. `verdict`: REAL (p < 0.05), WITHIN_NOISE, or UNKNOWN (a value with one run)."""

    spread: float
    low: float
    high: float
    p: float
    verdict: str


def per_value(trials: pd.DataFrame, param: str, order: Sequence[Any] = ()) -> list[ValueStats]:
    """Each value's stats, in `order` (the space's), values outside it after, by mean."""
    groups = _groups(trials, param)
    listed = [v for v in order if v in groups]
    rest = sorted((v for v in groups if v not in listed), key=lambda v: float(np.mean(groups[v])))
    return [_value_stats(v, groups[v]) for v in listed + rest]


def winner_against_runner_up(
    trials: pd.DataFrame, param: str, maximize: bool = False
) -> Difference | None:
    """The value with the best mean (the lowest; the highest with `maximize`) against the next
    best; None with fewer than two. The difference is the winner's lead, in % of the
    runner-up's mean: positive however the metric improves."""
    groups = _groups(trials, param)
    if len(groups) < 2:
        return None
    ranked = sorted(groups, key=lambda v: float(np.mean(groups[v])), reverse=maximize)
    best, next_best = groups[ranked[0]], groups[ranked[1]]
    winner, runner = _value_stats(ranked[0], best), _value_stats(ranked[1], next_best)
    sign = -1 if maximize else 1
    percent = sign * (runner.mean - winner.mean) / runner.mean * 100
    if winner.n < 2 or runner.n < 2:
        return Difference(winner, runner, percent, math.nan, math.nan, math.nan, UNKNOWN)
    if np.ptp(best) == 0 and np.ptp(next_best) == 0:  # no spread at all: t is undefined
        p, verdict = (0.0, REAL) if percent else (1.0, WITHIN_NOISE)
        return Difference(winner, runner, percent, percent, percent, p, verdict)
    # The interval of the lead: winner less runner-up where more is better, else the reverse.
    ahead, behind = (best, next_best) if maximize else (next_best, best)
    test = stats.ttest_ind(ahead, behind, equal_var=False)
    ci = test.confidence_interval(CONFIDENCE)
    low, high = (float(ci.low / runner.mean * 100), float(ci.high / runner.mean * 100))
    verdict = REAL if low > 0 or high < 0 else WITHIN_NOISE
    return Difference(winner, runner, percent, low, high, float(test.pvalue), verdict)


def trend(trials: pd.DataFrame, param: str, order: Sequence[Any]) -> Trend | None:
    """The monotone trend of val_loss along `order`; None with fewer than 3 of its values or
    fewer than 4 runs, where a rank correlation says nothing."""
    position = {v: i for i, v in enumerate(order)}
    rows = trials[trials[param].map(lambda v: v in position)]
    if rows[param].nunique() < 3 or len(rows) < 4:
        return None
    rho, p = stats.spearmanr(rows[param].map(position), rows["value"])
    return Trend(float(rho), float(p), len(rows))


def noise(trials: pd.DataFrame, param: str) -> float | None:
    """The seed-to-seed noise: the mean coefficient of variation (sample standard deviation over
    mean) of the values with two runs or more; None where no value has two."""
    cvs = [
        float(stats.variation(runs, ddof=1))
        for runs in _groups(trials, param).values()
        if len(runs) >= 2
    ]
    return float(np.mean(cvs)) if cvs else None


def effect(trials: pd.DataFrame, param: str) -> Effect | None:
    """The factor's effect size; None with fewer than two values. The test and the interval
    use the values with two runs or more (UNKNOWN with fewer than two such values)."""
    groups = list(_groups(trials, param).values())
    if len(groups) < 2:
        return None
    spread = _spread(*groups)
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return Effect(spread, math.nan, math.nan, math.nan, UNKNOWN)
    if all(np.ptp(g) == 0 for g in groups):
        p, verdict = (0.0, REAL) if spread else (1.0, WITHIN_NOISE)
        return Effect(spread, spread, spread, p, verdict)
    # Welch's ANOVA weighs each value by its variance, undefined when a value's runs are
    # equal: the classic one-way ANOVA then.
    welch = all(np.ptp(g) > 0 for g in groups)
    p = float(stats.f_oneway(*groups, equal_var=not welch).pvalue)
    if not math.isfinite(p):
        return Effect(spread, math.nan, math.nan, math.nan, UNKNOWN)
    spread = _spread(*groups)
    interval = stats.bootstrap(
        groups,
        _spread,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(0),
    ).confidence_interval
    verdict = REAL if p < ALPHA else WITHIN_NOISE
    return Effect(spread, float(interval.low), float(interval.high), p, verdict)


@dataclass(frozen=True)
class Confirmed:
    """One configuration of a drawn study retrained with new seeds (sweep.confirm): its search
    trial `number`, its `rank` in the search (1: the search's winner), its value `searched`
    there, and its new seeds' `runs` (ValueStats, value = the search trial's number)."""

    number: int
    rank: int
    searched: float
    runs: ValueStats


@dataclass(frozen=True)
class Confirmation:
    """A study's confirmation: each retrained configuration (by search rank), and the best of
    them on the new seeds against the next (None with fewer than two configurations). The
    search's winner `holds` when it is still best on the new seeds; where it does not,
    `against_winner` is that best against the search's winner."""

    confirmed: list[Confirmed]
    difference: Difference | None
    against_winner: Difference | None = None

    @property
    def winner(self) -> Confirmed | None:
        return next((c for c in self.confirmed if c.rank == 1), None)

    @property
    def holds(self) -> bool:
        best = self.difference.winner.value if self.difference else None
        return self.winner is not None and best in (None, self.winner.number)


def confirmation(
    trials: pd.DataFrame, params: Sequence[str], maximize: bool = False
) -> Confirmation | None:
    """The new seeds' runs of each confirmed configuration against its search trial; None
    where no confirmation trial completed with a finite value. `trials`: a study's compared
    trials, with a bool column `confirms`; a configuration is its values of `params`."""
    trials = trials[np.isfinite(trials["value"].astype(float))]  # a diverged run has no mean
    runs = trials[trials["confirms"]]
    search = trials[~trials["confirms"]].sort_values(
        ["value", "number"], ascending=[not maximize, True]
    )
    if runs.empty or search.empty:
        return None
    search = search.drop_duplicates(list(params))  # a configuration drawn twice: its best
    rank = {_config(row, params): i for i, (_, row) in enumerate(search.iterrows(), start=1)}
    first = {_config(row, params): row for _, row in search.iterrows()}
    runs = runs.assign(config=[_config(row, params) for _, row in runs.iterrows()])
    runs = runs[runs["config"].isin(list(first))]
    if runs.empty:
        return None
    runs = runs.assign(search_trial=[int(first[c]["number"]) for c in runs["config"]])
    confirmed = [
        Confirmed(
            int(first[c]["number"]),
            rank[c],
            float(first[c]["value"]),
            _value_stats(int(first[c]["number"]), group["value"].to_numpy(dtype=float)),
        )
        for c, group in runs.groupby("config", sort=False)
    ]
    confirmed.sort(key=lambda c: c.rank)
    found = Confirmation(confirmed, winner_against_runner_up(runs, "search_trial", maximize))
    if found.holds or found.winner is None or found.difference is None:
        return found
    pair = runs[runs["search_trial"].isin([found.difference.winner.value, found.winner.number])]
    against = winner_against_runner_up(pair, "search_trial", maximize)
    return Confirmation(confirmed, found.difference, against)


def _config(row: pd.Series, params: Sequence[str]) -> tuple:
    """A trial's configuration as a key (a parameter it lacks is None)."""
    return tuple(None if pd.isna(row[p]) else row[p] for p in params)


def mean_band(runs: Sequence[float]) -> tuple[float, float, float]:
    """The mean of `runs` and its 95% t interval (the mean twice with one run)."""
    runs = np.asarray(runs, dtype=float)
    mean = float(np.mean(runs))
    if len(runs) < 2 or np.ptp(runs) == 0:
        return mean, mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(runs) - 1, loc=mean, scale=stats.sem(runs))
    return mean, float(low), float(high)


def _spread(*groups: np.ndarray) -> float:
    means = [float(np.mean(g)) for g in groups]
    grand = float(np.mean(np.concatenate(groups)))
    return (max(means) - min(means)) / grand * 100


def _groups(trials: pd.DataFrame, param: str) -> dict[Any, np.ndarray]:
    """The finite val_loss values of each value of `param`."""
    rows = trials[np.isfinite(trials["value"].astype(float))]
    return {v: group["value"].to_numpy(dtype=float) for v, group in rows.groupby(param, sort=False)}


def _value_stats(value: Any, runs: np.ndarray) -> ValueStats:
    n, mean = len(runs), float(np.mean(runs))
    if n < 2:
        return ValueStats(value, n, mean, math.nan, math.nan, math.nan)
    std = float(np.std(runs, ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * std / math.sqrt(n)
    return ValueStats(value, n, mean, std, mean - half, mean + half)
