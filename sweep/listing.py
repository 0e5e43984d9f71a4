"""The table of `sweep studies`: each study of an Optuna storage, its trials by state and its
best trial, read from Optuna's tables in one SQLAlchemy query. Importing Optuna and opening its
RDBStorage take well over a second; this takes a fraction of one, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.storage import OPTUNA, connect, first_open, store_errors

# One row per trial (one with no trial for a study without any), in the order Optuna lists
# them; `objectives` tells a multi-objective study, which has no single best trial.
QUERY = """
SELECT s.study_name, d.direction,
       (SELECT COUNT(*) FROM study_directions AS n WHERE n.study_id = s.study_id) AS objectives,
       t.number, t.state, v.value, v.value_type
FROM studies AS s
LEFT JOIN study_directions AS d ON d.study_id = s.study_id AND d.objective = 0
LEFT JOIN trials AS t ON t.study_id = s.study_id
LEFT JOIN trial_values AS v ON v.trial_id = t.trial_id AND v.objective = 0
ORDER BY s.study_id, t.trial_id
"""
INFINITE = {"INF_POS": math.inf, "INF_NEG": -math.inf}
HEADER = f"{'study':<16}{'complete':>9}{'pruned':>8}{'failed':>8}{'running':>9}  best val_loss"


@dataclass
class StudyRow:
    """One study: trials by state (lower-case names of Optuna's TrialState) and the best
    complete trial as (number, value), by Optuna's rule: the first of the lowest (highest when
    maximising) values."""

    name: str
    maximize: bool
    single: bool
    states: dict[str, int]
    best: tuple[int, float] | None = None

    def add(self, number: int, state: str, value: float | None) -> None:
        state = state.lower()
        self.states[state] = self.states.get(state, 0) + 1
        if state != "complete" or not self.single or value is None:
            return
        if self.best is None or (value > self.best[1] if self.maximize else value < self.best[1]):
            self.best = (number, value)

    def line(self) -> str:
        """The study's line under HEADER."""
        n = self.states
        best = f"{self.best[1]:.5f} (trial {self.best[0]})" if self.best is not None else "-"
        return (
            f"{self.name:<16}{n.get('complete', 0):>9}{n.get('pruned', 0):>8}"
            f"{n.get('fail', 0):>8}{n.get('running', 0):>9}  {best}"
        )


def read_studies(url: str) -> list[StudyRow]:
    """The studies of the Optuna storage at `url`, by name; none for a store not created yet
    (which stays uncreated). Refuses the URLs and stores open_storage refuses, but reads past
    Optuna's schema-version check; takes no lock and writes nothing."""
    with first_open(url, OPTUNA, lock=False) as tables:
        if "studies" not in tables:
            return []
    with store_errors(url, OPTUNA), connect(url) as conn:
        rows = conn.exec_driver_sql(QUERY).all()
    studies: dict[str, StudyRow] = {}
    for name, direction, objectives, number, state, value, value_type in rows:
        study = studies.get(name)
        if study is None:
            study = studies[name] = StudyRow(name, direction == "MAXIMIZE", objectives == 1, {})
        if number is not None:
            study.add(number, state, INFINITE.get(value_type, value))
    return sorted(studies.values(), key=lambda study: study.name)


def table(studies: list[StudyRow]) -> str:
    """The header and one line per study."""
    return "\n".join([HEADER, *(study.line() for study in studies)])
