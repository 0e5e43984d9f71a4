"""Figures of a study that varies several parameters at once: the optimisation history and
importances, the metric against each parameter, the pruner's view, the Pareto front of cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.frames import compared, completed
from reports.style import GRAY_SAFE, epoch_axis, grid, missing, note, ordered, page, wrap


@dataclass(frozen=True)
class Objective:
    """What a multi-parameter study optimised, for labels and for which way is better."""

    metric: str = "val_loss"
    maximize: bool = False
    title: str = "Joint search"

    @property
    def log(self) -> bool:
        """Whether the metric is a loss, best shown on a log scale."""
        return "loss" in self.metric

    def scale(self, ax: Axes) -> None:
        """A log y axis for a loss, which spans decades; linear for any other metric."""
        if self.log:
            ax.set_yscale("log")


def plot_history(
    trials: pd.DataFrame,
    importances: dict[str, float] | None = None,
    objective: Objective = Objective(),
) -> Figure:
    """Optimisation history (each complete trial and the running best) and the parameter
    importances."""
    fig = page(f"{objective.title}: optimisation history and parameter importances")
    ax, imp = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.3, 1], "hspace": 0.4})
    done = completed(trials).sort_values("number")
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
    objective.scale(ax)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncols=3, frameon=False)
    if importances:
        names = list(importances)[::-1]
        bars = imp.barh(names, [importances[n] for n in names], color="0.55", edgecolor="black")
        imp.bar_label(bars, labels=[f"{importances[n]:.2f}" for n in names], padding=3)
        imp.set_xlabel("importance (PED-ANOVA, normalised)")
        imp.set_xlim(0, 1.1)
    else:
        note(imp, "importances need at least two complete trials")
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
    fig = page(f"{objective.title}: {objective.metric} against each parameter")
    axes = grid(fig, len(params), 2)
    done = completed(trials)
    for ax, param in zip(axes, params, strict=False):
        values = done[param]
        if order.get(param):
            labels = ordered(order[param], values.dropna().tolist())
            positions = values.map({v: i for i, v in enumerate(labels)})
            ax.set_xticks(range(len(labels)), [wrap(v, 18) for v in labels], fontsize=7)
        else:
            positions = values
            if param == "learning_rate":
                ax.set_xscale("log")
        ax.scatter(positions, done["value"], color="0.3", edgecolor="black", s=30)
        ax.set_title(param)
        ax.set_ylabel(objective.metric)
        objective.scale(ax)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_intermediate(intermediate: pd.DataFrame, objective: Objective = Objective()) -> Figure:
    """The metric per epoch as the pruner saw it; pruned trials end in a cross."""
    fig = page(f"{objective.title}: intermediate {objective.metric} and pruning")
    ax = fig.add_subplot()
    if intermediate.empty:
        note(ax, "no per-epoch values recorded")
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
    epoch_axis(ax)
    ax.set_ylabel(objective.metric)
    objective.scale(ax)
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
    fig = page(f"{objective.title}: {objective.metric} against cost (Pareto-optimal trials marked)")
    done = compared(trials)
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
            note(ax, missing(done, label))
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
        objective.scale(ax)
        ax.legend(loc="upper right")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
