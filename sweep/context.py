"""What every trial of one run shares (TrialContext), and the set-up that makes it: the seeded
split of the data checked against the space, and what each run records about its origin. Both
backends' runners build their context here, so the set-up is written once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sweep.data import DataSource, Split, load_training
from sweep.errors import SweepError
from sweep.points import kept_note
from sweep.profiles import Profile
from sweep.signals import StopToken
from sweep.slots import Slot
from sweep.space import SearchSpace, format_value, nothing_left

log = logging.getLogger(__name__)


class Progress:
    """Readable progress lines: one per trial start and end, one per epoch. Epoch and end lines
    carry the trial's number (`[t3]`), so the lines of trials running at once read apart; the
    start line says how many run at once when more than one does (`running()`)."""

    def __init__(self, total: int, running: Callable[[], int] | None = None) -> None:
        self.total, self.count, self.running = total, 0, running
        self._lock = threading.Lock()

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        with self._lock:
            self.count += 1
            count = self.count
        shown = "  ".join(f"{k}={format_value(v)}" for k, v in params.items())
        busy = self.running() if self.running is not None else 1
        at_once = f"  ({busy} running)" if busy > 1 else ""
        log.info("[%d/%d] trial %d: %s%s", count, self.total, number, shown, at_once)

    def epoch(
        self, number: int, epoch: int, epochs: int, logs: dict[str, float], seconds: float
    ) -> None:
        log.info(
            "    [t%d] epoch %3d/%s  loss %.5f  val_loss %.5f  %6.1f s",
            number,
            epoch,
            epochs,
            logs["loss"],
            logs["val_loss"],
            seconds,
        )

    def trial_ended(self, number: int, state: str, detail: str) -> None:
        log.info("    [t%d] -> %s: %s", number, state, detail)


@dataclass(frozen=True)
class TrialContext:
    """One run's trials' shared inputs: the space and profile, the split, the MLflow parent run
    and the params every trial run records. `encoder` and `n_classes` serve classifier spaces;
    `isolate` trains each autoencoder trial in a process of its own (sweep.worker), confined to
    `slot`'s threads and GPU; `stop` ends that process when another thread caught Ctrl-C.
    `jobs` is how many trials the run trains at once."""

    space: SearchSpace
    profile: Profile
    split: Split
    tracker: Any
    parent_run_id: str
    run_params: dict[str, Any]
    progress: Progress = field(default_factory=lambda: Progress(0))
    encoder: Any = None
    n_classes: int = 0
    isolate: bool = True
    slot: Slot = field(default_factory=lambda: Slot(0))
    jobs: int = 1
    stop: StopToken | None = None

    @property
    def seed(self) -> int:
        return self.run_params["seed"]


@dataclass(frozen=True)
class RunInputs:
    """The checked data of a run, before its study or search records anything."""

    split: Split
    n_classes: int
    run_params: dict[str, Any]


def prepare_run(
    space: SearchSpace, profile: Profile, source: DataSource, seed: int, study: str
) -> RunInputs:
    """The run's set-up, before any store records it: a note when the space's precision is
    slow here, the seeded split (checked against the space's sizes and image shape) and the
    params every run of `study` records."""
    note_precision(space, profile)
    split, n_classes = load_split(space, profile, source, seed)
    space.check_images(*split.image_size)
    run_params = {
        "study": study,
        "space_file": str(space.path),
        "profile": profile.name,
        "dataset": source.name,
        "seed": seed,
    }
    return RunInputs(split, n_classes, run_params)


def announce(
    study: str,
    described: str,
    done: int,
    budget: int,
    to_run: int,
    outside: int,
    space: SearchSpace,
) -> bool:
    """Say what a run will do: the study, its budget and what is left, the trials it keeps apart;
    False (and how to extend the study) when nothing is left to run."""
    log.info(
        "Study %r: %s; %d of %d trials done, %d to run", study, described, done, budget, to_run
    )
    if outside:
        log.info("%s.", kept_note(outside))
    if to_run == 0:
        log.info(nothing_left(space, budget))
    return to_run > 0


@contextmanager
def parent_run_ended(
    tracker: Any, parent_run_id: str, summary: Callable[[], dict]
) -> Iterator[None]:
    """End the run's MLflow parent run however the body ends: FINISHED, KILLED on Ctrl-C or
    SIGTERM, FAILED on an error, with the summary of what the stores hold by then."""
    status = "FINISHED"
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        tracker.end_study_run(parent_run_id, summary(), status)


def note_precision(space: SearchSpace, profile: Profile) -> None:
    """One `Note:` line when the space's precision runs slower than float32 on this machine."""
    from sweep.tf_env import precision_note

    if note := precision_note(getattr(profile.apply(space.base), "precision", "float32")):
        log.info("Note: %s.", note)


def load_split(
    space: SearchSpace, profile: Profile, source: DataSource, seed: int
) -> tuple[Split, int]:
    """The profile's seeded train/validation split of the source's training file (the space's
    train_size/val_size checked against it), announced, and the file's class count."""
    split, n_classes = load_training(source, profile, seed)
    split.take(space.base.train_size, space.base.val_size)
    for p in space.params:
        for value in p.candidates():
            sizes = {k: v for k, v in p.overrides(value).items() if k in ("train_size", "val_size")}
            try:
                split.take(sizes.get("train_size"), sizes.get("val_size"))
            except SweepError as exc:
                raise SweepError(f"{space.path}: params.{p.name}: {exc}") from None
    log.info(
        "Data: %s (%s), profile %s: %d train / %d validation images",
        source.name,
        source.location,
        profile.name,
        len(split.x_train),
        len(split.x_val),
    )
    return split, n_classes
