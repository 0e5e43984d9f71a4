"""The report's title page: where the data came from, one row per study, and the table "what
matters" (each one-factor study's effect size with its interval and verdict); and the noise
each one-factor study measured, which the others quote."""

from __future__ import annotations

import datetime as dt
from importlib import metadata

import pandas as pd
from matplotlib.figure import Figure

from reports.frames import best_trial, compared
from reports.statistics import REAL, UNKNOWN, WITHIN_NOISE, effect, noise
from reports.stores import store_missing
from reports.studies import StudyData
from reports.style import configuration, sci
from reports.tables import plot_summary_table
from sweep.storage import mask_url

PACKAGES = ("tensorflow", "keras", "optuna", "mlflow", "pandas", "seaborn")
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
                else configuration(best, study.params),
                "best value": "-" if best is None else f"{study.metric} {sci(best['value'])}",
                **{state: int((trials["state"] == state).sum()) for state in SUMMARY_STATES},
                "training time (s)": f"{trials['train_seconds'].sum():.0f}",
            }
        )
    return pd.DataFrame(rows)


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
        done = compared(study.search)
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
            cv = noise(compared(study.search), study.params[0])
            if cv is not None:
                found[study.name] = cv
    return found


def _recorded(data: list[StudyData], key: str) -> list[str]:
    """The distinct values of run parameter `key` the studies' sweeps recorded."""
    return sorted({s.run_params[key] for s in data if key in s.run_params})
