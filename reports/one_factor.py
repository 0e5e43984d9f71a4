"""Figures of a one-factor study (one parameter varied): each value's training curves, and
the values compared on best val_loss and training time."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.ticker import MaxNLocator

from reports.frames import completed
from reports.statistics import mean_band, per_value
from reports.style import (
    GRAY_SAFE,
    MARKERS,
    SCI,
    STYLES,
    draw_train_and_val,
    epoch_axis,
    grid,
    log_axis,
    missing,
    note,
    ordered,
    page,
    sci,
    wrap,
)


def plot_value_curves(
    curves: pd.DataFrame, trials: pd.DataFrame, param: str, order: Sequence[Any] = ()
) -> Figure:
    """Loss and val_loss per epoch for each value of `param`, min val_loss above each plot."""
    values = ordered(order, trials[param].dropna().tolist())
    fig = page(f"{param}: training curves per value")
    axes = grid(fig, len(values), 2 if len(values) > 1 else 1, sharex=True)
    for ax, value in zip(axes, values, strict=False):
        chosen = trials[trials[param] == value]
        ids = chosen["number"].tolist()
        data = curves[curves["trial"].isin(ids)]
        title = f"{param} = {value}"
        if data.empty:
            note(ax, "no curves recorded", va="center")
        for trial in ids:
            draw_train_and_val(ax, data[data["trial"] == trial], "loss")
        val = data[data["metric"] == "val_loss"].dropna(subset=["value"])
        if not val.empty:
            best = val.loc[val["value"].idxmin()]
            ax.plot(
                best["epoch"],
                best["value"],
                marker="*",
                markersize=13,
                color=GRAY_SAFE[3],
                markeredgecolor="black",
                zorder=5,
                linestyle="none",
                label="min val_loss",
            )
            title += f"\nmin val_loss {sci(best['value'])} (epoch {int(best['epoch'])})"
        states = chosen["state"].unique()
        if len(states) and "complete" not in states:
            title += f"  [{', '.join(states)}]"
        ax.set_title(title, fontsize=10)
        epoch_axis(ax)
        ax.set_ylabel("MSE")
        if not data.empty:
            log_axis(ax)
        else:
            ax.yaxis.set_major_formatter(SCI)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="upper right",
        ncols=3,
        frameon=False,
        bbox_to_anchor=(0.98, 0.985),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_comparison(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    param: str,
    order: Sequence[Any] = (),
    conclusion: str = "",
) -> Figure:
    """All values' val_loss curves overlaid; best val_loss and training time per value; the
    generated conclusion underneath."""
    fig = page(f"{param}: comparison")
    cells = fig.add_gridspec(
        2, 2, height_ratios=[1.15, 1], top=0.9, bottom=0.24, left=0.2, right=0.8, hspace=0.35
    )
    values = ordered(order, trials[param].dropna().tolist())
    _draw_overlay(fig.add_subplot(cells[0, :]), curves, trials, param, values)
    _draw_bars(fig, cells, trials, param, values)
    if conclusion:
        fig.text(
            0.04,
            0.02,
            conclusion,
            fontsize=10,
            va="bottom",
            wrap=True,
            bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.6"},
        )
    return fig


def _draw_overlay(
    overlay: Axes, curves: pd.DataFrame, trials: pd.DataFrame, param: str, values: list[Any]
) -> None:
    """Each value's val_loss per epoch, one line style and marker per value: the mean over its
    complete runs (repeats) with a 95% confidence band where it has more than one (where runs
    stopped early, later epochs average the runs that trained them)."""
    styles = zip(cycle(STYLES), cycle(MARKERS))
    repeated = False
    done = completed(trials)
    for value, (style, marker) in zip(values, styles, strict=False):
        ids = done.loc[done[param] == value, "number"].tolist()
        part = curves[curves["trial"].isin(ids) & (curves["metric"] == "val_loss")]
        part = part.dropna(subset=["value"])
        if part.empty:
            continue
        bands = [(epoch, *mean_band(g["value"])) for epoch, g in part.groupby("epoch")]
        epochs, means, lows, highs = (list(column) for column in zip(*bands, strict=True))
        (line,) = overlay.plot(
            epochs, means, style, marker=marker, markersize=4, label=wrap(value, 30)
        )
        if part["trial"].nunique() > 1:
            repeated = True
            overlay.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2)
    title = "val_loss per epoch, all values"
    overlay.set_title(title + (" (mean of the runs, 95% CI)" if repeated else ""))
    epoch_axis(overlay)
    overlay.set_ylabel("val_loss (MSE)")
    if overlay.lines:
        log_axis(overlay)
    else:
        overlay.yaxis.set_major_formatter(SCI)
    if overlay.lines:
        overlay.legend(title=param, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _draw_bars(
    fig: Figure, cells: GridSpec, trials: pd.DataFrame, param: str, values: list[Any]
) -> None:
    """Per value, the mean best val_loss (with its 95% CI where a value has repeats) and the
    mean training time of its complete trials."""
    done = completed(trials).copy()
    done["label"] = done[param].astype(str)
    labels = [str(v) for v in values if str(v) in set(done["label"])]
    for i, (column, title) in enumerate(
        (("value", "best val_loss"), ("train_seconds", "training time (s)"))
    ):
        ax = fig.add_subplot(cells[1, i])
        if done.empty or done[column].isna().all():
            note(ax, missing(done, title))
            ax.set_axis_off()
            continue
        summary = done.groupby("label")[column].mean().reindex(labels)
        positions = range(len(summary))[::-1]
        errors = None
        if column == "value" and (done.groupby("label").size() > 1).any():
            by_label = {str(s.value): s for s in per_value(done, param)}
            runs = [by_label.get(label) for label in labels]
            half = [(s.mean - s.low, s.high - s.mean) if s and s.n > 1 else (0, 0) for s in runs]
            errors = list(zip(*half, strict=True))
            title = "best val_loss (mean, 95% CI)"
        bars = ax.barh(
            positions,
            summary.values,
            xerr=errors,
            capsize=3,
            color="0.55",
            edgecolor="black",
            hatch="//" if column == "train_seconds" else None,
        )
        shown = [
            f"{v:.1f} s" if column == "train_seconds" and pd.notna(v) else sci(v)
            for v in summary.values
        ]
        ax.bar_label(bars, labels=shown, fontsize=8, padding=3)
        ax.set_yticks(positions, [wrap(v, 26) for v in summary.index] if i == 0 else [])
        ax.tick_params(axis="y", labelsize=7.5)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        if column == "value":
            ax.xaxis.set_major_formatter(SCI)
        ax.margins(x=0.25)
