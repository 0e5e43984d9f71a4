"""What each section of the report says after its title page (reports.title): a study's
pages, the best encoder's hand-off, the classifier stage. Each page is a figure drawn from
the data the stores gave; build.py puts them in order in the PDF."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Iterable, Mapping

import optuna
import pandas as pd
from matplotlib.figure import Figure

from reports.conclusions import confirmation_conclusion, joint_conclusion, one_factor_conclusion
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
from reports.statistics import confirmation
from reports.studies import StudyData
from reports.style import configuration, ordered, sci, short
from reports.tables import plot_summary_table, plot_tables, plot_text_page
from sweep.points import CONFIRM_SEEDS, CONFIRMS

STATUS_ROWS = 10
CLASS_FORMATS = {"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}", "support": "{:.0f}"}


def _pairs(params: Mapping[str, str], keys: Iterable[str]) -> str:
    """`key=value` for each of `keys` that `params` holds, two spaces apart."""
    return "  ".join(f"{k}={params[k]}" for k in keys if k in params)


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
        search = study.search  # a drawn study's confirmation has a page of its own
        pages = [
            plot_value_curves(study.curves, search, param, order),
            plot_comparison(
                study.curves,
                search,
                param,
                order,
                conclusion=one_factor_conclusion(search, param, order, elsewhere) + _outside(study),
            ),
        ]
    else:
        importances = _importances(study)
        title = "Joint search" if study.name == "joint" else f"Study {study.name}"
        objective = Objective(study.metric, study.maximize, title)
        # The search's own figures; the trials retraining its best have a page of their own.
        search = study.search
        intermediate = study.intermediate[study.intermediate["trial"].isin(search["number"])]
        pages = [
            plot_history(search, importances, objective),
            plot_param_scatter(search, study.params, study.value_order, objective),
            plot_intermediate(intermediate, objective),
            plot_pareto(search, objective),
            plot_text_page(
                f"{study.name}: conclusion",
                joint_conclusion(search, importances, study.metric, study.maximize)
                + _outside(study),
            ),
        ]
    if study.trials["confirms"].any():
        pages.append(confirmation_page(study))
    if study.reconstructions:
        pages.append(reconstructions_page(study))
    tables = list(study.architectures.items())
    for i in range(0, len(tables), 2):
        pages.append(plot_tables(dict(tables[i : i + 2]), f"{study.name}: architectures"))
    return pages


def confirmation_page(study: StudyData) -> Figure:
    """A drawn study's best configurations retrained with new seeds: per configuration its
    search rank and value, its new seeds' mean with the 95% CI; whether the winner holds."""
    title = f"{study.name}: does the winner hold on new seeds?"
    found = confirmation(compared(study.trials), study.params, study.maximize)
    asked = int(study.trials["confirms"].sum())
    if found is None:
        text = f"{asked} confirmation trial(s) recorded, none complete with a finite value yet."
        return plot_summary_table(pd.DataFrame(), title, text)
    search = study.search.set_index("number")
    rows = [
        {
            "search rank": c.rank,
            "trial": f"#{c.number}",
            "configuration": short(configuration(search.loc[c.number], study.params), 60),
            f"search {study.metric}": sci(c.searched),
            "new seeds": c.runs.n,
            "mean": sci(c.runs.mean),
            "95% CI": "-" if c.runs.n < 2 else f"{sci(c.runs.low)} to {sci(c.runs.high)}",
        }
        for c in found.confirmed
    ]
    # The configurations the study confirms (recorded by its latest run), or those it has
    # confirmed (an extended search confirms new ones too); queued trials have no params yet.
    k = study.study.user_attrs.get("confirm", 0) if study.study is not None else 0
    expected = max(k if isinstance(k, int) else 0, len(found.confirmed)) * CONFIRM_SEEDS
    text = confirmation_conclusion(found, expected, study.metric, study.maximize)
    return plot_summary_table(pd.DataFrame(rows), title, textwrap.fill(text, 92))


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
                short(configuration(row, study.params), 64) for _, row in trials.iterrows()
            ],
            "epochs": seen["count"].reindex(trials.index).fillna(0).astype(int).to_numpy(),
            f"last {study.metric}": [sci(v) for v in seen["last"].reindex(trials.index)],
            "reason": [short(r, 60) if pd.notna(r) else "" for r in trials["fail_reason"]],
        }
    )


def _importances(study: StudyData) -> dict[str, float]:
    """Optuna's parameter importances over the search's trials (the confirmation's copies of
    its best would weigh them again); none where they cannot be computed (too few trials)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            searched = optuna.create_study(directions=study.study.directions)
            searched.add_trials(
                t for t in study.study.get_trials(deepcopy=False) if not t.user_attrs.get(CONFIRMS)
            )
            return optuna.importance.get_param_importances(searched, params=study.params)
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
