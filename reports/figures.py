"""Figures of the classifier stage: the training curves of both phases, the confusion matrix,
grids of classified test images. `sweep classify` draws the last two for its own artifacts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.style import draw_train_and_val, epoch_axis, grid, page


def plot_confusion_matrix(
    matrix: pd.DataFrame, title: str = "Confusion matrix (test set)"
) -> Figure:
    """Counts with true classes as rows and predicted classes as columns."""
    fig = page(title)
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
    fig = page(title)
    n = len(images)
    if n == 0:
        fig.text(0.5, 0.5, "none", ha="center", fontsize=14)
        return fig
    axes = grid(fig, n, cols)
    for ax, image, t, p in zip(axes, images, true, predicted, strict=False):
        ax.imshow(np.squeeze(image), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(
            f"true: {t}\npred: {p}",
            fontsize=8,
            color="black" if t == p else "0.2",
            fontweight="normal" if t == p else "bold",
        )
        ax.set_axis_off()
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def plot_reconstructions(rows: Sequence[tuple[str, np.ndarray]], title: str) -> Figure:
    """One row per label: a trial's validation images (above) and its reconstructions (below),
    the same images in every row, so the rows compare by eye."""
    fig = page(title)
    height = 0.86 / max(len(rows), 1)
    for i, (label, image) in enumerate(rows):
        top = 0.9 - i * height
        fig.text(0.02, top - height / 2, label, fontsize=9, va="center", ha="left", wrap=True)
        ax = fig.add_axes((0.24, top - height + 0.01, 0.74, height - 0.02))
        ax.imshow(image, interpolation="nearest")
        ax.set_axis_off()
    if not rows:
        fig.text(0.04, 0.85, "No trial recorded its reconstructions.", fontsize=11)
    return fig


def plot_sample_images(image: np.ndarray, title: str) -> Figure:
    """One saved picture (a grid `plot_examples` drew for `sweep classify`) filling a page."""
    fig = page(title)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.imshow(image)
    ax.set_axis_off()
    return fig


def plot_phase_curves(history: pd.DataFrame, boundary: int | None) -> Figure:
    """Classifier loss and accuracy per epoch across both phases, the phase boundary marked."""
    fig = page("Classifier: training curves (phase 1 frozen encoder, phase 2 fine-tuning)")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        draw_train_and_val(ax, history, metric)
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
        epoch_axis(ax)
        ax.set_title(metric)
        ax.legend(loc="center right")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
