"""One function per figure: each takes DataFrames and returns a matplotlib Figure.

Figures are A4 landscape pages, readable in grayscale: lines differ by style and marker as
well as colour, small values are in scientific notation, legends sit outside the data.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

PAGE = (11.69, 8.27)
STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
GRAY_SAFE = sns.color_palette("colorblind")

sns.set_theme(style="whitegrid", context="paper", palette=GRAY_SAFE, font_scale=1.05)


@dataclass(frozen=True)
class Objective:
    """What a multi-parameter study optimised, for labels and for which way is better."""

    metric: str = "val_loss"
    maximize: bool = False
    title: str = "Joint search"

    @property
    def log(self) -> bool:
        return "loss" in self.metric


def sci(value: float | None) -> str:
    """3 significant digits, scientific notation below 0.1 (losses are all small)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2e}" if abs(value) < 0.1 else f"{value:.4g}"


_SCI = FuncFormatter(lambda v, _pos: sci(v) if v else "0")


def _page(title: str) -> Figure:
    fig = plt.figure(figsize=PAGE)
    fig.suptitle(title, fontsize=15, fontweight="bold", x=0.04, ha="left", y=0.975)
    return fig


def _labels(order: Sequence[Any], present: Sequence[Any]) -> list[Any]:
    """Values in the space's order, then any others seen in the study."""
    seen = list(dict.fromkeys(present))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def _plot_train_and_val(ax: plt.Axes, rows: pd.DataFrame, metric: str) -> None:
    """`metric` (solid, dark) and `val_<metric>` (dashed, blue) per epoch from long-format rows."""
    for name, style, marker, color in (
        (metric, "-", "o", "0.15"),
        (f"val_{metric}", "--", "s", GRAY_SAFE[0]),
    ):
        part = rows[rows["metric"] == name]
        ax.plot(part["epoch"], part["value"], style, marker=marker, markersize=3, color=color,
                label=name)  # fmt: skip


def plot_value_curves(
    curves: pd.DataFrame, trials: pd.DataFrame, param: str, order: Sequence[Any] = ()
) -> Figure:
    """Loss and val_loss per epoch for each value of `param`, min val_loss above each plot."""
    values = _labels(order, trials[param].dropna().tolist())
    n = max(1, len(values))
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig = _page(f"{param}: training curves per value")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True)).ravel()
    for ax, value in zip(axes, values, strict=False):
        ids = trials.loc[trials[param] == value, "number"].tolist()
        data = curves[curves["trial"].isin(ids)]
        title = f"{param} = {value}"
        if data.empty:
            ax.text(
                0.5, 0.5, "no curves recorded", ha="center", va="center", transform=ax.transAxes
            )
        for trial in ids:
            _plot_train_and_val(ax, data[data["trial"] == trial], "loss")
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
        states = trials.loc[trials[param] == value, "state"].unique()
        if len(states) and "complete" not in states:
            title += f"  [{', '.join(states)}]"
        ax.set_title(title, fontsize=10)
        _epoch_axis(ax)
        ax.set_ylabel("MSE")
        ax.yaxis.set_major_formatter(_SCI)
    for ax in axes[len(values) :]:
        ax.set_visible(False)
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
    fig = _page(f"{param}: comparison")
    grid = fig.add_gridspec(
        2, 2, height_ratios=[1.15, 1], top=0.9, bottom=0.24, left=0.2, right=0.8, hspace=0.35
    )
    overlay = fig.add_subplot(grid[0, :])
    values = _labels(order, trials[param].dropna().tolist())
    styles = zip(cycle(STYLES), cycle(MARKERS))
    for value, (style, marker) in zip(values, styles, strict=False):
        ids = trials.loc[trials[param] == value, "number"].tolist()
        for trial in ids:
            part = curves[(curves["trial"] == trial) & (curves["metric"] == "val_loss")]
            if not part.empty:
                overlay.plot(
                    part["epoch"],
                    part["value"],
                    style,
                    marker=marker,
                    markersize=4,
                    label=_wrap(value, 30),
                )
    overlay.set_title("val_loss per epoch, all values")
    _epoch_axis(overlay)
    overlay.set_ylabel("val_loss (MSE)")
    overlay.yaxis.set_major_formatter(_SCI)
    if overlay.lines:
        overlay.legend(title=param, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)

    done = trials[trials["state"] == "complete"].copy()
    done["label"] = done[param].astype(str)
    labels = [str(v) for v in values if str(v) in set(done["label"])]
    for i, (column, title) in enumerate(
        (("value", "best val_loss"), ("train_seconds", "training time (s)"))
    ):
        ax = fig.add_subplot(grid[1, i])
        if done.empty or done[column].isna().all():
            missing = "no complete trials" if done.empty else f"no {title} recorded"
            ax.text(0.5, 0.5, missing, ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        summary = done.groupby("label")[column].min().reindex(labels)
        positions = range(len(summary))[::-1]
        bars = ax.barh(
            positions,
            summary.values,
            color="0.55",
            edgecolor="black",
            hatch="//" if column == "train_seconds" else None,
        )
        shown = [
            f"{v:.1f} s" if column == "train_seconds" and pd.notna(v) else sci(v)
            for v in summary.values
        ]
        ax.bar_label(bars, labels=shown, fontsize=8, padding=3)
        ax.set_yticks(positions, [_wrap(v, 26) for v in summary.index] if i == 0 else [])
        ax.tick_params(axis="y", labelsize=7.5)
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        if column == "value":
            ax.xaxis.set_major_formatter(_SCI)
        ax.margins(x=0.25)
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


def plot_tables(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Up to two tables side by side (layer, type, output shape, parameters)."""
    fig = _page(title)
    axes = fig.subplots(1, max(1, len(tables)), squeeze=False).ravel()
    for ax, (caption, table) in zip(axes, tables.items(), strict=False):
        draw_table(ax, table, caption)
    return fig


def _table(ax: plt.Axes, cells: pd.DataFrame, loc: str, font: float, height: float):
    """A left-aligned table with a bold grey header row."""
    shown = ax.table(
        cellText=cells.values, colLabels=list(cells.columns), loc=loc, cellLoc="left", colLoc="left"
    )
    shown.auto_set_font_size(False)
    shown.set_fontsize(font)
    shown.auto_set_column_width(list(range(len(cells.columns))))
    for (row, _col), cell in shown.get_celld().items():
        cell.set_height(height)
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("0.85")
    return shown


def draw_table(ax: plt.Axes, table: pd.DataFrame, caption: str) -> None:
    """An architecture table (layer, type, output shape, params) with its total."""
    ax.set_axis_off()
    cells = table.copy()
    if "params" in cells:
        total = int(cells["params"].sum())
        cells["params"] = cells["params"].map("{:,.0f}".format).where(cells["params"].notna(), "-")
        cells.loc[len(cells)] = ["total", "", "", f"{total:,}"][: len(cells.columns)]
    font = 8 if len(cells) <= 28 else 6.5
    _table(ax, cells, "upper center", font, min(0.9 / (len(cells) + 2), 0.045))
    ax.set_title(caption, fontsize=10, loc="left")


def plot_summary_table(summary: pd.DataFrame, title: str, text: str = "") -> Figure:
    """A block of text above a table: the title page, the classifier's metrics."""
    fig = _page(title)
    if text:
        fig.text(0.04, 0.9, text, fontsize=10.5, va="top", family="monospace")
    ax = fig.add_axes((0.04, 0.05, 0.92, 0.5))
    ax.set_axis_off()
    if summary.empty:
        ax.text(0, 0.9, "nothing recorded", fontsize=12)
        return fig
    _fit_width(fig, ax, _table(ax, summary, "upper left", 10, 0.09), 10)
    return fig


def _fit_width(fig: Figure, ax: plt.Axes, table: Any, font: float) -> None:
    """Shrink the table's font until the table is no wider than its axes."""
    renderer = fig.canvas.get_renderer()
    for _ in range(3):
        ratio = table.get_window_extent(renderer).width / ax.get_window_extent(renderer).width
        if ratio <= 1:
            return
        font /= ratio
        table.set_fontsize(font)


def plot_text_page(title: str, text: str) -> Figure:
    fig = _page(title)
    fig.text(0.04, 0.9, text, fontsize=11, va="top", family="monospace", wrap=True)
    return fig


def plot_history(
    trials: pd.DataFrame,
    importances: dict[str, float] | None = None,
    objective: Objective = Objective(),
) -> Figure:
    """Optimisation history (each complete trial and the running best) and the parameter
    importances."""
    fig = _page(f"{objective.title}: optimisation history and parameter importances")
    ax, imp = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.3, 1], "hspace": 0.4})
    done = trials[trials["state"] == "complete"].sort_values("number")
    ax.plot(done["number"], done["value"], "o", color="0.4", label="complete trial")
    ax.step(
        done["number"],
        done["value"].cummax() if objective.maximize else done["value"].cummin(),
        where="post",
        color="black",
        label="best so far",
    )
    pruned = trials[trials["state"] == "pruned"]
    if not pruned.empty:
        ax.plot(
            pruned["number"],
            [done["value"].median() if not done.empty else 0] * len(pruned),
            "x",
            color=GRAY_SAFE[3],
            label="pruned (no final value)",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {objective.metric}")
    if objective.log:
        ax.set_yscale("log")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    if importances:
        names = list(importances)[::-1]
        bars = imp.barh(names, [importances[n] for n in names], color="0.55", edgecolor="black")
        imp.bar_label(bars, labels=[f"{importances[n]:.2f}" for n in names], padding=3)
        imp.set_xlabel("importance (PED-ANOVA, normalised)")
        imp.set_xlim(0, 1.1)
    else:
        imp.text(
            0.5,
            0.5,
            "importances need at least two complete trials",
            ha="center",
            transform=imp.transAxes,
        )
        imp.set_axis_off()
    imp.set_title("parameter importances")
    return fig


def plot_param_scatter(
    trials: pd.DataFrame,
    params: Sequence[str],
    order: dict[str, list],
    objective: Objective = Objective(),
) -> Figure:
    """The best value of the metric against each parameter (complete trials)."""
    fig = _page(f"{objective.title}: {objective.metric} against each parameter")
    cols = 2
    rows = max(1, math.ceil(len(params) / cols))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    done = trials[trials["state"] == "complete"]
    for ax, param in zip(axes, params, strict=False):
        values = done[param]
        if order.get(param):
            labels = _labels(order[param], values.dropna().tolist())
            positions = values.map({v: i for i, v in enumerate(labels)})
            ax.set_xticks(range(len(labels)), [_wrap(v, 18) for v in labels], fontsize=7)
        else:
            positions = values
            if param == "learning_rate":
                ax.set_xscale("log")
        ax.scatter(positions, done["value"], color="0.3", edgecolor="black", s=30)
        ax.set_title(param)
        ax.set_ylabel(objective.metric)
        if objective.log:
            ax.set_yscale("log")
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def _short(label: Any, width: int = 28) -> str:
    text = str(label)
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(label: Any, width: int = 22) -> str:
    """A long value label (e.g. a depth group) over several lines, broken at spaces."""
    return textwrap.fill(str(label), width, break_long_words=False, break_on_hyphens=False)


def _epoch_axis(ax: plt.Axes) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_intermediate(intermediate: pd.DataFrame, objective: Objective = Objective()) -> Figure:
    """The metric per epoch as the pruner saw it; pruned trials end in a cross."""
    fig = _page(f"{objective.title}: intermediate {objective.metric} and pruning")
    ax = fig.add_subplot()
    if intermediate.empty:
        ax.text(0.5, 0.5, "no per-epoch values recorded", ha="center", transform=ax.transAxes)
    for _trial, part in intermediate.groupby("trial"):
        pruned = part["state"].iloc[0] == "pruned"
        ax.plot(
            part["epoch"],
            part["value"],
            "--" if pruned else "-",
            color=GRAY_SAFE[3] if pruned else "0.35",
            alpha=0.9,
            linewidth=1,
        )
        if pruned:
            last = part.iloc[-1]
            ax.plot(last["epoch"], last["value"], "x", color="black", markersize=8)
    _epoch_axis(ax)
    ax.set_ylabel(objective.metric)
    if objective.log:
        ax.set_yscale("log")
    ax.plot([], [], "-", color="0.35", label="complete")
    ax.plot([], [], "--x", color=GRAY_SAFE[3], label="pruned (x: where it stopped)")
    ax.legend(loc="upper right")
    return fig


def pareto_mask(cost: pd.Series, value: pd.Series) -> pd.Series:
    """True where no other point is at least as cheap and at least as good (and better in one)."""
    points = np.column_stack([cost.to_numpy(float), value.to_numpy(float)])
    mask = []
    for c, v in points:
        dominated = np.any(
            (points[:, 0] <= c) & (points[:, 1] <= v) & ((points[:, 0] < c) | (points[:, 1] < v))
        )
        mask.append(not dominated)
    return pd.Series(mask, index=cost.index)


def plot_pareto(trials: pd.DataFrame, objective: Objective = Objective()) -> Figure:
    """The metric against parameter count and training time, Pareto-optimal trials marked."""
    fig = _page(
        f"{objective.title}: {objective.metric} against cost (Pareto-optimal trials marked)"
    )
    done = trials[trials["state"] == "complete"].dropna(subset=["value"])
    for ax, column, label in zip(
        fig.subplots(1, 2),
        ("param_count", "train_seconds"),
        ("parameters", "training time (s)"),
        strict=True,
    ):
        data = done.dropna(subset=[column])
        ax.set_xlabel(label)
        ax.set_ylabel(f"best {objective.metric}")
        if data.empty:
            missing = "no complete trials" if done.empty else f"no {label} recorded"
            ax.text(0.5, 0.5, missing, ha="center", transform=ax.transAxes)
            continue
        front = pareto_mask(data[column], -data["value"] if objective.maximize else data["value"])
        ax.scatter(data[column], data["value"], color="0.6", edgecolor="black", s=30, label="trial")
        best = data[front].sort_values(column)
        ax.plot(
            best[column], best["value"], "-D", color="black", markersize=7, label="Pareto-optimal"
        )
        for _, row in best.iterrows():
            ax.annotate(
                f"#{int(row['number'])}",
                (row[column], row["value"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        if objective.log:
            ax.set_yscale("log")
        ax.legend(loc="upper right")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_confusion_matrix(
    matrix: pd.DataFrame, title: str = "Confusion matrix (test set)"
) -> Figure:
    """Counts with true classes as rows and predicted classes as columns."""
    fig = _page(title)
    if matrix.empty:
        fig.text(0.5, 0.5, "no confusion matrix recorded", ha="center", fontsize=14)
        return fig
    ax = fig.add_axes((0.22, 0.12, 0.6, 0.75))
    sns.heatmap(
        matrix,
        annot=True,
        fmt="d",
        cmap="Greys",
        cbar=False,
        ax=ax,
        annot_kws={"fontsize": 8},
        linewidths=0.5,
        linecolor="0.7",
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_examples(
    images: np.ndarray, true: Sequence[str], predicted: Sequence[str], title: str, cols: int = 6
) -> Figure:
    """A grid of images, each titled with its true and predicted class."""
    fig = _page(title)
    n = len(images)
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", fontsize=14)
        return fig
    rows = math.ceil(n / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, image, t, p in zip(axes, images, true, predicted, strict=False):
        ax.imshow(np.squeeze(image), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(
            f"true: {t}\npred: {p}",
            fontsize=8,
            color="black" if t == p else "0.2",
            fontweight="normal" if t == p else "bold",
        )
        ax.set_axis_off()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def plot_phase_curves(history: pd.DataFrame, boundary: int | None) -> Figure:
    """Classifier loss and accuracy per epoch across both phases, the phase boundary marked."""
    fig = _page("Classifier: training curves (phase 1 frozen encoder, phase 2 fine-tuning)")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        _plot_train_and_val(ax, history, metric)
        if boundary is not None:
            ax.axvline(boundary + 0.5, color="0.4", linestyle=":", linewidth=1.5)
            ax.text(
                boundary + 0.6,
                0.98,
                "phase 2 ->",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=9,
            )
        _epoch_axis(ax)
        ax.set_title(metric)
        ax.legend(loc="center right")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
