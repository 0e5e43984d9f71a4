"""reports.statistics on synthetic studies whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.conclusions import one_factor_conclusion
from reports.statistics import (
    REAL,
    UNKNOWN,
    WITHIN_NOISE,
    effect,
    noise,
    per_value,
    trend,
    winner_against_runner_up,
)


def runs(values: dict[str, list[float]], param: str = "kernel_size") -> pd.DataFrame:
    """One row per run: the value of `param` and its best val_loss."""
    rows = [{param: v, "value": x} for v, xs in values.items() for x in xs]
    return pd.DataFrame(rows)


def test_a_value_s_mean_has_the_t_interval() -> None:
    [three] = per_value(runs({"3": [1.0, 2.0, 3.0]}), "kernel_size")
    assert (three.n, three.mean, three.std) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df) x std / sqrt(n)
    assert three.low == pytest.approx(2.0 - half) and three.high == pytest.approx(2.0 + half)


def test_values_keep_the_space_s_order_and_others_follow_by_mean() -> None:
    table = runs({"7": [3.0], "3": [1.0], "5": [2.0], "9": [0.5]})
    assert [s.value for s in per_value(table, "kernel_size", order=["3", "5", "7"])] == [
        "3",
        "5",
        "7",
        "9",
    ]


def test_two_values_far_apart_are_a_real_difference() -> None:
    table = runs({"3": [0.0100, 0.0102, 0.0098], "5": [0.0090, 0.0091, 0.0089]})
    diff = winner_against_runner_up(table, "kernel_size")
    assert (diff.winner.value, diff.runner.value) == ("5", "3")
    assert diff.percent == pytest.approx(10.0)  # 0.0090 is 10% below 0.0100
    assert 0 < diff.low < 10 < diff.high < 20
    assert diff.p < 0.01 and diff.verdict == REAL


def test_two_equal_values_with_noise_are_within_noise() -> None:
    rng = np.random.default_rng(1)
    noisy = {v: list(0.01 * (1 + 0.08 * rng.standard_normal(3))) for v in ("128", "256")}
    diff = winner_against_runner_up(runs(noisy, "batch_size"), "batch_size")
    assert diff.low < 0 < diff.high
    assert diff.p > 0.05 and diff.verdict == WITHIN_NOISE
    assert effect(runs(noisy, "batch_size"), "batch_size").verdict == WITHIN_NOISE


def test_a_monotone_trend_is_detected_and_its_direction_given() -> None:
    rng = np.random.default_rng(2)
    means = {"[8, 16, 32]": 0.017, "[16, 32, 64]": 0.013, "[32, 64, 128]": 0.010}
    means["[64, 128, 256]"] = 0.0075
    table = runs({v: list(m * (1 + 0.03 * rng.standard_normal(3))) for v, m in means.items()})
    found = trend(table, "kernel_size", list(means))
    assert found.n == 12 and found.rho < -0.9
    assert found.significant and found.falls
    rising = trend(table, "kernel_size", list(reversed(means)))
    assert rising.rho > 0.9 and not rising.falls
    assert effect(table, "kernel_size").verdict == REAL


def test_no_trend_in_shuffled_noise() -> None:
    rng = np.random.default_rng(3)
    table = runs({v: list(0.01 * (1 + 0.05 * rng.standard_normal(4))) for v in "abcd"})
    assert not trend(table, "kernel_size", list("abcd")).significant


def test_one_run_per_value_leaves_the_noise_unknown() -> None:
    table = runs({"3": [0.010], "5": [0.009], "7": [0.011]})
    diff = winner_against_runner_up(table, "kernel_size")
    assert diff.verdict == UNKNOWN and math.isnan(diff.low) and math.isnan(diff.p)
    assert diff.percent == pytest.approx(10.0)
    assert noise(table, "kernel_size") is None
    assert effect(table, "kernel_size").verdict == UNKNOWN
    assert trend(table, "kernel_size", ["3", "5", "7"]) is None  # 3 runs say nothing


def test_noise_is_the_mean_coefficient_of_variation() -> None:
    table = runs({"3": [0.9, 1.0, 1.1], "5": [1.8, 2.0, 2.2], "7": [5.0]})
    assert noise(table, "kernel_size") == pytest.approx(0.1)  # 0.1/1 and 0.2/2; 7 has one run


def test_effect_is_the_spread_of_the_means_over_the_grand_mean() -> None:
    table = runs({"3": [0.99, 1.0, 1.01], "5": [1.99, 2.0, 2.01]})
    found = effect(table, "kernel_size")
    assert found.spread == pytest.approx(100 / 1.5)  # means 1 and 2, grand mean 1.5
    assert found.low <= found.spread <= found.high and found.verdict == REAL


def test_runs_without_a_finite_value_are_left_out() -> None:
    table = runs({"3": [0.010, math.nan, math.inf], "5": [0.011]})
    assert [s.n for s in per_value(table, "kernel_size")] == [1, 1]
    assert winner_against_runner_up(runs({"3": [0.01]}), "kernel_size") is None


def study(values: dict[str, list[float]], param: str = "kernel_size") -> pd.DataFrame:
    """A study's trials frame as the report reads it, every trial complete."""
    table = runs(values, param)
    return table.assign(
        number=range(len(table)), state="complete", train_seconds=10.0, param_count=100.0
    )


def test_the_conclusion_calls_a_difference_beyond_the_noise_real() -> None:
    trials = study({"3": [0.0100, 0.0102, 0.0098], "5": [0.0090, 0.0091, 0.0089]})
    text = one_factor_conclusion(trials, "kernel_size", ["3", "5"])
    assert text.startswith("kernel_size = 5 reached the lowest mean val_loss, 9.00e-03 (95% CI")
    assert "3 runs)" in text and "10.0% below the runner-up 3 (1.00e-02)" in text
    assert ": a real difference." in text and "Seed-to-seed noise: 1.6%" in text
    assert "5.8% to 14.2% (95% CI, Welch p = 0.0048, 3 and 3 runs)" in text
    assert "different seed can change" not in text  # the 2% rule is gone


def test_the_conclusion_says_when_two_values_cannot_be_told_apart() -> None:
    rng = np.random.default_rng(1)
    noisy = {v: list(0.01 * (1 + 0.08 * rng.standard_normal(3))) for v in ("128", "256")}
    text = one_factor_conclusion(study(noisy, "batch_size"), "batch_size", ["128", "256"])
    assert "within the noise" in text and "cannot be told apart" in text


def test_the_conclusion_with_one_run_each_says_the_noise_is_unknown_and_quotes_another() -> None:
    trials = study({"3": [0.010], "5": [0.009], "7": [0.011]})
    alone = one_factor_conclusion(trials, "kernel_size", ["3", "5", "7"])
    assert "noise is unknown" in alone and "--repeats 3" in alone
    quoted = one_factor_conclusion(trials, "kernel_size", ["3", "5", "7"], ("filters", 0.043))
    assert "study filters of the same store measured 4.3%" in quoted


def test_the_conclusion_gives_the_trend_along_ordered_values() -> None:
    rng = np.random.default_rng(2)
    means = {"3": 0.012, "5": 0.010, "7": 0.009, "9": 0.008}
    trials = study({v: list(m * (1 + 0.02 * rng.standard_normal(3))) for v, m in means.items()})
    text = one_factor_conclusion(trials, "kernel_size", list(means))
    assert "Along the listed values val_loss falls (Spearman rho -0." in text
    assert "a significant trend" in text


def test_a_value_with_a_single_run_among_repeated_ones_is_named_and_the_own_noise_quoted() -> None:
    trials = study({"3": [0.0100, 0.0102, 0.0098], "5": [0.0090], "7": [0.012, 0.0121]})
    text = one_factor_conclusion(trials, "kernel_size", ["3", "5", "7"], ("filters", 0.5))
    assert "lowest mean val_loss, 9.00e-03 (1 run)" in text
    assert "5 has a single complete run" in text and "untested" in text
    assert "filters" not in text and "Seed-to-seed noise:" in text  # its own noise, not another's
    found = effect(trials, "kernel_size")  # tested on the values with repeats
    assert found.verdict == REAL and found.p < 0.05


def test_a_value_whose_runs_are_equal_does_not_hide_an_effect() -> None:
    trials = runs({"a": [0.010] * 3, "b": [0.011, 0.012, 0.0115], "c": [0.02, 0.021, 0.019]})
    found = effect(trials, "kernel_size")
    assert found.verdict == REAL and found.p < 0.05  # Welch's ANOVA alone gives p = NaN here
