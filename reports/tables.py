"""Pages of tables and text: architecture tables, the summary and metrics tables under a
block of text, plain text pages."""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.table import Table

from reports.style import page


def plot_tables(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Up to two tables side by side (layer, type, output shape, parameters)."""
    fig = page(title)
    axes = fig.subplots(1, max(1, len(tables)), squeeze=False).ravel()
    for ax, (caption, table) in zip(axes, tables.items(), strict=False):
        draw_table(ax, table, caption)
    return fig


def draw_table(ax: Axes, table: pd.DataFrame, caption: str) -> None:
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


def plot_summary_table(
    summary: pd.DataFrame,
    title: str,
    text: str = "",
    below: tuple[str, pd.DataFrame] | None = None,
) -> Figure:
    """A block of text above a table (the title page, the classifier's metrics); `below`, a
    second table under its heading (the title page's "what matters")."""
    fig = page(title)
    if text:
        fig.text(0.04, 0.9, text, fontsize=10.5, va="top", family="monospace")
    shown_below = below is not None and not below[1].empty
    ax = fig.add_axes((0.04, 0.3, 0.92, 0.27) if shown_below else (0.04, 0.05, 0.92, 0.5))
    ax.set_axis_off()
    if summary.empty:
        ax.text(0, 0.9, "nothing recorded", fontsize=12)
        return fig
    _fit_width(fig, ax, _table(ax, summary, "upper left", 10, 0.16 if shown_below else 0.09), 10)
    if shown_below:
        heading, cells = below
        fig.text(0.04, 0.27, heading, fontsize=11, fontweight="bold", va="bottom")
        lower = fig.add_axes((0.04, 0.03, 0.92, 0.23))
        lower.set_axis_off()
        _fit_width(fig, lower, _table(lower, cells, "upper left", 10, 0.18), 10)
    return fig


def plot_text_page(title: str, text: str) -> Figure:
    """A page of monospaced text: a conclusion, a status, the best encoder's hand-off."""
    fig = page(title)
    fig.text(0.04, 0.9, text, fontsize=11, va="top", family="monospace", wrap=True)
    return fig


def _table(ax: Axes, cells: pd.DataFrame, loc: str, font: float, height: float) -> Table:
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


def _fit_width(fig: Figure, ax: Axes, table: Table, font: float) -> None:
    """Shrink the table's font until the table is no wider than its axes."""
    renderer = fig.canvas.get_renderer()
    for _ in range(3):
        ratio = table.get_window_extent(renderer).width / ax.get_window_extent(renderer).width
        if ratio <= 1:
            return
        font /= ratio
        table.set_fontsize(font)
