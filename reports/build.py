"""Assemble the PDF: title page, one section per study, the best encoder. Reads stores only."""

from __future__ import annotations

import datetime as dt
import errno
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages

from reports import figures
from reports.conclusions import joint_conclusion, one_factor_conclusion
from reports.stores import (
    ClassifierData,
    StudyData,
    load_classifier_data,
    load_study_data,
    no_studies,
    package_versions,
    store_missing,
    study_names,
)
from sweep.errors import SweepError
from sweep.storage import mask_url

REPORT_NAME = "report.pdf"
STATUS_ROWS = 10
CLASS_FORMATS = {"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}", "support": "{:.0f}"}
SUMMARY_STATES = ("complete", "running", "pruned", "failed")
CANONICAL_ORDER = ("filters", "kernel", "batch", "lr", "depth")
CLASSIFIER_SECTION = "classifier stage"
NOT_STUDIES = ("title", "best encoder", CLASSIFIER_SECTION)


@dataclass
class Report:
    """What was written: the file, its sections (study name -> page titles), the page count."""

    path: Path
    sections: dict[str, list[str]] = field(default_factory=dict)
    pages: int = 0
    seconds: float = 0.0


def build_report(
    storage_url: str, tracking_uri: str, output: str | Path, studies: list[str] | None = None
) -> Report:
    """Write the report for `studies` (default: every study in the storage) to `output`, a
    PDF file or a folder to write report.pdf in."""
    start = time.perf_counter()
    names = list(dict.fromkeys(studies or study_names(storage_url)))
    if not names:
        raise no_studies(storage_url)
    report = Report(path=report_path(output))
    with_classifier = not studies or "classifier" in studies
    with writing(report.path) as partial:
        _write_pdf(report, partial, storage_url, tracking_uri, names, with_classifier)
    report.seconds = time.perf_counter() - start
    return report


def report_path(output: str | Path) -> Path:
    """`output` itself, or report.pdf inside it when it is a folder (or ends in a slash)."""
    folder = str(output).endswith(("/", os.sep)) or Path(output).is_dir()
    return Path(output) / REPORT_NAME if folder else Path(output)


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path`, renamed to it when the body succeeds: a place that
    cannot be written fails in one line before any work, and a failure leaves no half PDF."""
    try:
        blocker = next(p for p in path.parents if p.exists())
        if not blocker.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        yield Path(partial)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from others
        os.replace(partial, path)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    finally:
        Path(partial).unlink(missing_ok=True)


def _unwritable(path: Path, exc: OSError) -> SweepError:
    return SweepError(
        f"cannot write the report to {path}: {exc.strerror or exc}; "
        "pass -o a writable FILE.pdf or folder"
    )


def _write_pdf(
    report: Report,
    partial: Path,
    storage_url: str,
    tracking_uri: str,
    names: list[str],
    with_classifier: bool,
) -> None:
    data = sorted(
        (load_study_data(storage_url, tracking_uri, name) for name in names), key=_section_order
    )
    with PdfPages(partial, metadata={"Title": "Autoencoder sweep report"}) as pdf:

        def add(section: str, fig: plt.Figure) -> None:
            report.sections.setdefault(section, []).append(
                fig.texts[0].get_text() if fig.texts else ""
            )
            pdf.savefig(fig)
            plt.close(fig)
            report.pages += 1

        add("title", _title_page(data, storage_url, tracking_uri))
        for study in data:
            for fig in _study_pages(study):
                add(study.name, fig)
        add("best encoder", _best_encoder_page(data))
        classifier = load_classifier_data(tracking_uri)
        if classifier is not None and with_classifier:
            for fig in _classifier_pages(classifier):
                add(CLASSIFIER_SECTION, fig)


def _section_order(study: StudyData) -> tuple[int, int, str]:
    known = CANONICAL_ORDER.index(study.name) if study.name in CANONICAL_ORDER else 99
    return (0 if study.is_one_factor else 1, known, study.name)


def summary_table(data: list[StudyData]) -> pd.DataFrame:
    """One row per study; a study with nothing to compare yet shows why instead of a best."""
    rows = []
    for study in data:
        trials = study.trials
        best = _best(study)
        rows.append(
            {
                "study": study.name,
                "varies": ", ".join(study.params) or "-",
                "best configuration": study.note
                if best is None
                else _configuration(best, study.params),
                "best value": "-"
                if best is None
                else f"{study.metric} {figures.sci(best['value'])}",
                **{state: int((trials["state"] == state).sum()) for state in SUMMARY_STATES},
                "training time (s)": f"{trials['train_seconds'].sum():.0f}",
            }
        )
    return pd.DataFrame(rows)


def _configuration(trial: pd.Series, params: list[str]) -> str:
    """The trial's parameters as `name=value`, leaving out those it does not have."""
    shown = [
        figures._short(f"{p}={figures.sci(v) if isinstance(v, float) else v}", 40)
        for p in params
        if pd.notna(v := trial[p])
    ]
    return "  ".join(shown) or "-"


def _best(study: StudyData) -> pd.Series | None:
    done = study.complete.dropna(subset=["value"])
    if done.empty:
        return None
    return done.loc[done["value"].idxmax() if study.maximize else done["value"].idxmin()]


def _title_page(data: list[StudyData], storage_url: str, tracking_uri: str) -> plt.Figure:
    first = next((s.run_params for s in data if s.run_params), {})
    datasets = sorted({s.run_params["dataset"] for s in data if "dataset" in s.run_params})
    profiles = sorted({s.run_params["profile"] for s in data if "profile" in s.run_params})
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    text = "\n".join(
        [
            f"Generated  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"Dataset    {', '.join(datasets) or '?'}",
            f"Profile    {', '.join(profiles) or '?'}",
            f"Studies    {', '.join(s.name for s in data)}",
            f"Optuna     {mask_url(storage_url)}",
            f"MLflow     {mask_url(tracking_uri)}"
            + (" (not created yet: no curves)" if store_missing(tracking_uri) else ""),
            f"Packages   {versions}",
            f"Seed       {first.get('seed', '?')}",
        ]
    )
    return figures.plot_summary_table(summary_table(data), "Autoencoder sweep report", text)


def _study_pages(study: StudyData) -> list[plt.Figure]:
    if study.note:
        return [_status_page(study)]
    if study.is_one_factor:
        param = study.params[0]
        order = study.value_order.get(param, [])
        pages = [
            figures.plot_value_curves(study.curves, study.trials, param, order),
            figures.plot_comparison(
                study.curves,
                study.trials,
                param,
                order,
                conclusion=one_factor_conclusion(study.trials, param) + _outside(study),
            ),
        ]
    else:
        importances = _importances(study)
        title = "Joint search" if study.name == "joint" else f"Study {study.name}"
        objective = figures.Objective(study.metric, study.maximize, title)
        pages = [
            figures.plot_history(study.trials, importances, objective),
            figures.plot_param_scatter(study.trials, study.params, study.value_order, objective),
            figures.plot_intermediate(study.intermediate, objective),
            figures.plot_pareto(study.trials, objective),
            figures.plot_text_page(
                f"{study.name}: conclusion",
                joint_conclusion(study.trials, importances, study.metric, study.maximize)
                + _outside(study),
            ),
        ]
    tables = list(study.architectures.items())
    for i in range(0, len(tables), 2):
        pages.append(figures.plot_tables(dict(tables[i : i + 2]), f"{study.name}: architectures"))
    return pages


def _outside(study: StudyData) -> str:
    """The sentence a study's conclusion ends with when its space dropped points it ran."""
    if not study.outside:
        return ""
    if study.outside == 1:
        return " 1 trial of a point the space no longer lists is kept in the stores, not shown."
    return (
        f" {study.outside} trials of points the space no longer lists are kept in the stores, "
        "not shown."
    )


def _status_page(study: StudyData) -> plt.Figure:
    """A study with nothing to compare yet: why, and each trial's state so far."""
    title = f"{study.name}: {study.note}"
    if study.trials.empty:
        return figures.plot_text_page(
            title,
            f"Study {study.name!r} exists but has no trials: its sweep stopped before the first\n"
            "trial started (e.g. on bad data), or has not started one yet. Its figures appear\n"
            "here once a trial completes.",
        )
    table = _trial_status(study)
    shown = table.head(STATUS_ROWS)
    more = f" (the first {STATUS_ROWS} of {len(table)})" if len(table) > STATUS_ROWS else ""
    text = (
        "No trial has completed, so there is nothing to compare yet; the figures appear here\n"
        f"once one does. The trials so far{more}:"
    )
    return figures.plot_summary_table(shown, title, text)


def _trial_status(study: StudyData) -> pd.DataFrame:
    """Per trial: state, parameters, epochs the pruner saw, the last value, why it failed."""
    seen = study.intermediate.groupby("trial")["value"].agg(["count", "last"])
    trials = study.trials.set_index("number")
    return pd.DataFrame(
        {
            "trial": trials.index,
            "state": trials["state"].to_numpy(),
            "parameters": [
                figures._short(_configuration(row, study.params), 64)
                for _, row in trials.iterrows()
            ],
            "epochs": seen["count"].reindex(trials.index).fillna(0).astype(int).to_numpy(),
            f"last {study.metric}": [figures.sci(v) for v in seen["last"].reindex(trials.index)],
            "reason": [figures._short(r, 60) if pd.notna(r) else "" for r in trials["fail_reason"]],
        }
    )


def _importances(study: StudyData) -> dict[str, float]:
    """Optuna's parameter importances; none where they cannot be computed (too few trials)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study.study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _best_encoder_page(data: list[StudyData]) -> plt.Figure:
    """Where the best autoencoder trial's model is stored, for `sweep classify`."""
    candidates = [
        (best["value"], study, best)
        for study in data
        if study.kind == "autoencoder" and (best := _best(study)) is not None
    ]
    title = "Best encoder: the hand-off to the classifier stage"
    if not candidates:
        return figures.plot_text_page(title, "No complete trial in these studies yet.")
    value, study, row = min(candidates, key=lambda c: c[0])
    lines = [
        f"Study      {study.name}",
        f"Trial      {int(row['number'])}",
        f"val_loss   {figures.sci(value)}",
    ]
    run = study.runs.get(row["run_id"])
    if run is None:
        lines.append("MLflow run not found in the tracking store: no model to hand off.")
        return figures.plot_text_page(title, "\n".join(lines))
    keys = ("filters", "pool_blocks", "kernel_size", "learning_rate", "batch_size", "epochs")
    config = "  ".join(f"{k}={run.data.params[k]}" for k in keys if k in run.data.params)
    lines += [
        f"Config     {config}",
        f"MLflow run {run.info.run_id}",
        f"Model      runs:/{run.info.run_id}/model.keras",
        f"Stored at  {run.info.artifact_uri}/model.keras",
        "",
        "The encoder is the model's input up to its last enc_*_bn* layer:",
        "models.autoencoder.extract_encoder(keras.models.load_model(path)).",
    ]
    return figures.plot_text_page(title, "\n".join(lines))


def _classifier_pages(run: ClassifierData) -> list[plt.Figure]:
    title = "Classifier stage"
    keys = (
        ("units", "dropout", "augment", "batch_size", "patience"),
        ("learning_rate", "finetune_learning_rate", "lr_factor", "frozen_epochs", "epochs"),
    )
    lines = [
        f"MLflow run {run.run_id}",
        f"Encoder    {run.params.get('encoder', '?')}",
        f"Data       {run.params.get('dataset', '?')}, profile {run.params.get('profile', '?')}: "
        f"{run.params.get('train_images', '?')} train / {run.params.get('val_images', '?')} "
        "validation images",
        "           (early stopping and every choice use the validation split only)",
        *(
            ("Config     " if row is keys[0] else "           ")
            + "  ".join(f"{k}={run.params[k]}" for k in row if k in run.params)
            for row in keys
        ),
        "",
        "Test set, evaluated once at the end:",
        *(
            f"  {name:<18}{run.metrics[key]:.4f}"
            for name, key in (
                ("accuracy", "test_accuracy"),
                ("precision (macro)", "test_precision_macro"),
                ("recall (macro)", "test_recall_macro"),
                ("F1 (macro)", "test_f1_macro"),
            )
            if key in run.metrics
        ),
    ]
    per_class = run.per_class.copy()
    for column, shown in CLASS_FORMATS.items():
        values = per_class[column]
        per_class[column] = values.map(shown.format).where(values.notna(), "-")
    pages = [
        figures.plot_summary_table(per_class, f"{title}: test metrics", "\n".join(lines)),
        figures.plot_phase_curves(run.history, run.boundary),
        figures.plot_confusion_matrix(run.confusion),
    ]
    for name, image in run.images.items():
        fig = figures.plot_text_page(f"{title}: {name} test images (sampled)", "")
        ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
        ax.imshow(image)
        ax.set_axis_off()
        pages.append(fig)
    return pages
