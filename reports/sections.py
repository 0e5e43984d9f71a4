"""What each section of the report says: the title page and its summary table, a study's
pages, the best encoder's hand-off, the classifier stage. Each page is a figure drawn from
the data the stores gave; build.py puts them in order in the PDF."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Mapping
from importlib import metadata

import optuna
import pandas as pd
from matplotlib.figure import Figure

from reports.conclusions import joint_conclusion, one_factor_conclusion
from reports.figures import (
    plot_confusion_matrix,
    plot_phase_curves,
    plot_reconstructions,
    plot_sample_images,
)
from reports.frames import best_trial, compared
from reports.joint import (
    Objective,
    plot_history,
    plot_intermediate,
    plot_param_scatter,
    plot_pareto,
)
from reports.one_factor import plot_comparison, plot_value_curves
from reports.runs import ClassifierData
from reports.statistics import REAL, UNKNOWN, WITHIN_NOISE, effect, noise
from reports.stores import store_missing
from reports.studies import StudyData
from reports.style import ordered, sci, short
from reports.tables import plot_summary_table, plot_tables, plot_text_page
from sweep.storage import mask_url

PACKAGES = ("tensorflow", "keras", "optuna", "mlflow", "pandas", "seaborn")
STATUS_ROWS = 10
CLASS_FORMATS = {"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}", "support": "{:.0f}"}
SUMMARY_STATES = ("complete", "running", "pruned", "failed")


def summary_table(data: list[StudyData]) -> pd.DataFrame:
    """One row per study; a study with nothing to compare yet shows why instead of a best."""
    rows = []
    for study in data:
        trials = study.trials
        best = best_trial(study.trials, study.maximize)
        rows.append(
            {
                "study": study.name,
                "varies": ", ".join(study.params) or "-",
                "best configuration": study.note
                if best is None
                else _configuration(best, study.params),
                "best value": "-" if best is None else f"{study.metric} {sci(best['value'])}",
                **{state: int((trials["state"] == state).sum()) for state in SUMMARY_STATES},
                "training time (s)": f"{trials['train_seconds'].sum():.0f}",
            }
        )
    return pd.DataFrame(rows)


def _configuration(trial: pd.Series, params: list[str]) -> str:
    """The trial's parameters as `name=value`, leaving out those it does not have."""
    shown = [
        short(f"{p}={sci(v) if isinstance(v, float) else v}", 40)
        for p in params
        if pd.notna(v := trial[p])
    ]
    return "  ".join(shown) or "-"


def _pairs(params: Mapping[str, str], keys: Iterable[str]) -> str:
    """`key=value` for each of `keys` that `params` holds, two spaces apart."""
    return "  ".join(f"{k}={params[k]}" for k in keys if k in params)


def package_versions() -> dict[str, str]:
    """The installed version of each package the results depend on, for the title page."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def title_page(data: list[StudyData], storage_url: str, tracking_uri: str) -> Figure:
    """Where the data came from (stores, dataset, profile, packages, seed), then the summary."""
    first = next((s.run_params for s in data if s.run_params), {})
    datasets, profiles = (_recorded(data, key) for key in ("dataset", "profile"))
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
    matters = what_matters(data)
    heading = "What matters: each factor's effect on best val_loss (one-factor studies)"
    return plot_summary_table(
        summary_table(data), "Autoencoder sweep report", text, (heading, matters)
    )


VERDICTS = {
    REAL: "matters",
    WITHIN_NOISE: "within noise",
    UNKNOWN: "noise unknown (one run each)",
}


def what_matters(data: list[StudyData]) -> pd.DataFrame:
    """One row per one-factor study: its factor, the runs per value, the effect size (spread of
    the value means over the grand mean) with its 95% CI, Welch's ANOVA p, and a verdict."""
    rows = []
    for study in data:
        if study.note or not study.is_one_factor:
            continue
        param = study.params[0]
        done = compared(study.trials)
        found = effect(done, param)
        if found is None:
            continue
        counts = done.groupby(param).size()
        low, high = counts.min(), counts.max()
        runs = str(low) if low == high else f"{low}-{high}"
        known = found.verdict != UNKNOWN
        rows.append(
            {
                "factor": param,
                "study": study.name,
                "values": str(len(counts)),
                "runs each": runs,
                "effect": f"{found.spread:.1f}%",
                "95% CI": f"{found.low:.1f}% to {found.high:.1f}%" if known else "-",
                "p": f"{found.p:.2g}" if known else "-",
                "verdict": VERDICTS[found.verdict],
            }
        )
    return pd.DataFrame(rows)


def measured_noise(data: list[StudyData]) -> dict[str, float]:
    """The seed-to-seed noise of each one-factor study that has repeats."""
    found = {}
    for study in data:
        if not study.note and study.is_one_factor:
            cv = noise(compared(study.trials), study.params[0])
            if cv is not None:
                found[study.name] = cv
    return found


def _recorded(data: list[StudyData], key: str) -> list[str]:
    """The distinct values of run parameter `key` the studies' sweeps recorded."""
    return sorted({s.run_params[key] for s in data if key in s.run_params})


def study_pages(
    study: StudyData, noise_by_study: Mapping[str, float] | None = None
) -> list[Figure]:
    """A one-factor study's curves and comparison, or a joint study's history, scatter,
    pruning, Pareto and conclusion pages; then its architectures, two tables a page.
    `noise_by_study`: the noise other studies of the store measured (measured_noise), quoted
    where this one has a single run per value."""
    if study.note:
        return [_status_page(study)]
    if study.is_one_factor:
        param = study.params[0]
        order = study.value_order.get(param, [])
        others = [(n, cv) for n, cv in (noise_by_study or {}).items() if n != study.name]
        elsewhere = max(others, key=lambda pair: pair[1], default=None)
        pages = [
            plot_value_curves(study.curves, study.trials, param, order),
            plot_comparison(
                study.curves,
                study.trials,
                param,
                order,
                conclusion=one_factor_conclusion(study.trials, param, order, elsewhere)
                + _outside(study),
            ),
        ]
    else:
        importances = _importances(study)
        title = "Joint search" if study.name == "joint" else f"Study {study.name}"
        objective = Objective(study.metric, study.maximize, title)
        pages = [
            plot_history(study.trials, importances, objective),
            plot_param_scatter(study.trials, study.params, study.value_order, objective),
            plot_intermediate(study.intermediate, objective),
            plot_pareto(study.trials, objective),
            plot_text_page(
                f"{study.name}: conclusion",
                joint_conclusion(study.trials, importances, study.metric, study.maximize)
                + _outside(study),
            ),
        ]
    if study.reconstructions:
        pages.append(reconstructions_page(study))
    tables = list(study.architectures.items())
    for i in range(0, len(tables), 2):
        pages.append(plot_tables(dict(tables[i : i + 2]), f"{study.name}: architectures"))
    return pages


def reconstructions_page(study: StudyData) -> Figure:
    """A one-factor study: one row per value (its first complete run's pictures); a joint
    study: its best trial's. The same validation images in every row."""
    done = study.complete.sort_values(["repeat", "number"])
    done = done[done["number"].isin(list(study.reconstructions))]
    if study.is_one_factor:
        param = study.params[0]
        firsts = done.drop_duplicates(param).set_index(param)["number"]
        values = ordered(study.value_order.get(param, []), firsts.index.tolist())
        rows = [(f"{param} = {short(v, 40)}\ntrial {int(firsts[v])}", firsts[v]) for v in values]
    else:
        best = best_trial(done, study.maximize)
        rows = [] if best is None else [(f"best trial {int(best['number'])}", best["number"])]
    title = f"{study.name}: validation images (top) and their reconstructions (bottom)"
    return plot_reconstructions([(label, study.reconstructions[n]) for label, n in rows], title)


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


def _status_page(study: StudyData) -> Figure:
    """A study with nothing to compare yet: why, and each trial's state so far."""
    title = f"{study.name}: {study.note}"
    if study.trials.empty:
        return plot_text_page(
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
    return plot_summary_table(shown, title, text)


def _trial_status(study: StudyData) -> pd.DataFrame:
    """Per trial: state, parameters, epochs the pruner saw, the last value, why it failed."""
    seen = study.intermediate.groupby("trial")["value"].agg(["count", "last"])
    trials = study.trials.set_index("number")
    return pd.DataFrame(
        {
            "trial": trials.index,
            "state": trials["state"].to_numpy(),
            "parameters": [
                short(_configuration(row, study.params), 64) for _, row in trials.iterrows()
            ],
            "epochs": seen["count"].reindex(trials.index).fillna(0).astype(int).to_numpy(),
            f"last {study.metric}": [sci(v) for v in seen["last"].reindex(trials.index)],
            "reason": [short(r, 60) if pd.notna(r) else "" for r in trials["fail_reason"]],
        }
    )


def _importances(study: StudyData) -> dict[str, float]:
    """Optuna's parameter importances; none where they cannot be computed (too few trials)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study.study, params=study.params)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def best_encoder_page(data: list[StudyData]) -> Figure:
    """Where the best autoencoder trial's model is stored, for `sweep classify`."""
    candidates = [
        (best["value"], study, best)
        for study in data
        if study.kind == "autoencoder"
        and (best := best_trial(study.trials, study.maximize)) is not None
    ]
    title = "Best encoder: the hand-off to the classifier stage"
    if not candidates:
        return plot_text_page(title, "No complete trial in these studies yet.")
    value, study, row = min(candidates, key=lambda c: c[0])
    lines = [
        f"Study      {study.name}",
        f"Trial      {int(row['number'])}",
        f"val_loss   {sci(value)}",
    ]
    run = study.runs.get(row["run_id"])
    if run is None:
        lines.append("MLflow run not found in the tracking store: no model to hand off.")
        return plot_text_page(title, "\n".join(lines))
    keys = ("filters", "pool_blocks", "kernel_size", "learning_rate", "batch_size", "epochs")
    lines += [
        f"Config     {_pairs(run.data.params, keys)}",
        f"MLflow run {run.info.run_id}",
        f"Model      runs:/{run.info.run_id}/model.keras",
        f"Stored at  {run.info.artifact_uri}/model.keras",
        "",
        "The encoder is the model's input up to its last enc_*_bn* layer:",
        "models.autoencoder.extract_encoder(keras.models.load_model(path)).",
    ]
    return plot_text_page(title, "\n".join(lines))


def classifier_pages(run: ClassifierData) -> list[Figure]:
    """The classifier run's set-up and test metrics, its curves, confusion matrix, samples."""
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
            ("Config     " if row is keys[0] else "           ") + _pairs(run.params, row)
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
        plot_summary_table(per_class, f"{title}: test metrics", "\n".join(lines)),
        plot_phase_curves(run.history, run.boundary),
        plot_confusion_matrix(run.confusion),
    ]
    for name, image in run.images.items():
        pages.append(plot_sample_images(image, f"{title}: {name} test images (sampled)"))
    return pages
