"""Assemble the PDF: title page, one section per study, the best encoder. Reads stores only."""

from __future__ import annotations

import datetime as dt
import time
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
    package_versions,
    study_names,
)
from sweep.errors import SweepError
from sweep.storage import mask_url

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
    storage_url: str, tracking_uri: str, output: Path, studies: list[str] | None = None
) -> Report:
    """Write the report for `studies` (default: every study in the storage) to `output`."""
    start = time.perf_counter()
    names = studies or study_names(storage_url)
    if not names:
        raise SweepError(
            f"no studies in {mask_url(storage_url)}; run a sweep first (make sweep-filters)"
        )
    data = [load_study_data(storage_url, tracking_uri, name) for name in names]
    data.sort(key=_section_order)
    report = Report(path=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(output, metadata={"Title": "Autoencoder sweep report"}) as pdf:

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
        add("best encoder", _best_encoder_page(data, tracking_uri))
        classifier = load_classifier_data(tracking_uri)
        if classifier is not None and (not studies or "classifier" in studies):
            for fig in _classifier_pages(classifier):
                add(CLASSIFIER_SECTION, fig)
    report.seconds = time.perf_counter() - start
    return report


def _section_order(study: StudyData) -> tuple[int, int, str]:
    known = CANONICAL_ORDER.index(study.name) if study.name in CANONICAL_ORDER else 99
    return (0 if study.is_one_factor else 1, known, study.name)


def summary_table(data: list[StudyData]) -> pd.DataFrame:
    rows = []
    for study in data:
        trials = study.trials
        done = study.complete.dropna(subset=["value"])
        best = None
        if not done.empty:
            best = done.loc[done["value"].idxmax() if study.maximize else done["value"].idxmin()]
        rows.append(
            {
                "study": study.name,
                "varies": ", ".join(study.params),
                "best configuration": "  ".join(
                    figures._short(f"{p}={best[p]}", 40) for p in study.params
                )
                if best is not None
                else "-",
                "best value": f"{study.metric} {figures.sci(best['value'])}"
                if best is not None
                else "-",
                "complete": int((trials["state"] == "complete").sum()),
                "pruned": int((trials["state"] == "pruned").sum()),
                "failed": int((trials["state"] == "failed").sum()),
                "training time (s)": f"{trials['train_seconds'].fillna(0).sum():.0f}",
            }
        )
    return pd.DataFrame(rows)


def _title_page(data: list[StudyData], storage_url: str, tracking_uri: str) -> plt.Figure:
    first = next((s.run_params for s in data if s.run_params), {})
    datasets = sorted({s.run_params.get("dataset", "?") for s in data})
    profiles = sorted({s.run_params.get("profile", "?") for s in data})
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    text = "\n".join(
        [
            f"Generated  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"Dataset    {', '.join(datasets)}",
            f"Profile    {', '.join(profiles)}",
            f"Studies    {', '.join(s.name for s in data)}",
            f"Optuna     {mask_url(storage_url)}",
            f"MLflow     {mask_url(tracking_uri)}",
            f"Packages   {versions}",
            f"Seed       {first.get('seed', '?')}",
        ]
    )
    return figures.plot_summary_table(summary_table(data), "Autoencoder sweep report", text)


def _study_pages(study: StudyData) -> list[plt.Figure]:
    if study.trials.empty:
        return [figures.plot_text_page(f"{study.name}: no trials", "The study has no trials yet.")]
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
                conclusion=one_factor_conclusion(study.trials, param),
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
                joint_conclusion(study.trials, importances, study.metric, study.maximize),
            ),
        ]
    tables = list(study.architectures.items())
    for i in range(0, len(tables), 2):
        pages.append(figures.plot_tables(dict(tables[i : i + 2]), f"{study.name}: architectures"))
    return pages


def _importances(study: StudyData) -> dict[str, float]:
    try:
        return optuna.importance.get_param_importances(study.study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _best_encoder_page(data: list[StudyData], tracking_uri: str) -> plt.Figure:
    candidates = [
        (row["value"], study.name, row)
        for study in data
        if study.kind == "autoencoder"
        for _, row in study.complete.dropna(subset=["value"]).iterrows()
    ]
    title = "Best encoder: the hand-off to the classifier stage"
    if not candidates:
        return figures.plot_text_page(title, "No complete trial in these studies yet.")
    value, name, row = min(candidates, key=lambda c: c[0])
    lines = [
        f"Study      {name}",
        f"Trial      {int(row['number'])}",
        f"val_loss   {figures.sci(value)}",
    ]
    run_id = row.get("run_id")
    if run_id:
        from mlflow import MlflowClient

        run = MlflowClient(tracking_uri).get_run(run_id)
        keys = ("filters", "pool_blocks", "kernel_size", "learning_rate", "batch_size", "epochs")
        config = "  ".join(f"{k}={run.data.params[k]}" for k in keys if k in run.data.params)
        lines += [
            f"Config     {config}",
            f"MLflow run {run_id}",
            f"Model      runs:/{run_id}/model.keras",
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
    for column in ("precision", "recall", "f1"):
        per_class[column] = per_class[column].map(lambda v: f"{v:.3f}")
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
