"""The look every figure shares: A4 landscape pages, grayscale-safe lines, number and label
formatting. Figures differ by style and marker as well as colour, small values are in
scientific notation, legends sit outside the data."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402

PAGE = (11.69, 8.27)
STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
GRAY_SAFE = sns.color_palette("colorblind")

sns.set_theme(style="whitegrid", context="paper", palette=GRAY_SAFE, font_scale=1.05)


def sci(value: float | None) -> str:
    """3 significant digits, scientific notation below 0.1 (losses are all small)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2e}" if abs(value) < 0.1 else f"{value:.4g}"


SCI = FuncFormatter(lambda v, _pos: sci(v) if v else "0")


def log_axis(ax: Axes) -> None:
    """A log-scale loss axis (curves spanning a decade are flat lines on a linear one), its
    ticks at 1, 2 and 5 per decade, all labelled alike."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.yaxis.set_major_formatter(SCI)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def page(title: str) -> Figure:
    """An empty report page with its title at the top left."""
    fig = plt.figure(figsize=PAGE)
    fig.suptitle(title, fontsize=15, fontweight="bold", x=0.04, ha="left", y=0.975)
    return fig


def grid(fig: Figure, n: int, cols: int, **options: Any) -> np.ndarray:
    """Axes for `n` plots in rows of `cols` (at least one row); the cells past `n` are hidden."""
    rows = max(1, math.ceil(n / cols))
    axes = fig.subplots(rows, cols, squeeze=False, **options).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes


def ordered(order: Sequence[Any], present: Sequence[Any]) -> list[Any]:
    """Values in the space's order, then any others seen in the study."""
    seen = list(dict.fromkeys(present))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def short(label: Any, width: int = 28) -> str:
    """`label` cut to `width` characters, an ellipsis marking the cut."""
    text = str(label)
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap(label: Any, width: int = 22) -> str:
    """A long value label (e.g. a depth group) over several lines, broken at spaces."""
    return textwrap.fill(str(label), width, break_long_words=False, break_on_hyphens=False)


def epoch_axis(ax: Axes) -> None:
    """Epochs on the x axis, whole numbers only."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def note(ax: Axes, text: str, **options: Any) -> None:
    """`text` centred in `ax`, where there is no data to draw."""
    ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes, **options)


def missing(done: pd.DataFrame, what: str) -> str:
    """Why a panel of complete trials' `what` is empty."""
    return "no complete trials" if done.empty else f"no {what} recorded"


def draw_train_and_val(ax: Axes, rows: pd.DataFrame, metric: str) -> None:
    """`metric` (solid, dark) and `val_<metric>` (dashed, blue) per epoch from long-format rows."""
    for name, style, marker, color in (
        (metric, "-", "o", "0.15"),
        (f"val_{metric}", "--", "s", GRAY_SAFE[0]),
    ):
        part = rows[rows["metric"] == name]
        ax.plot(
            part["epoch"],
            part["value"],
            style,
            marker=marker,
            markersize=3,
            color=color,
            label=name,
        )


def configuration(trial: pd.Series, params: list[str]) -> str:
    """The trial's parameters as `name=value`, leaving out those it does not have."""
    shown = [
        short(f"{p}={sci(v) if isinstance(v, float) else v}", 40)
        for p in params
        if pd.notna(v := trial[p])
    ]
    return "  ".join(shown) or "-"
