"""What the benchmark scripts share: the quick profile's Fashion-MNIST split, the filter
configurations of search_spaces/filters.yaml, CSV output and a per-epoch timer."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def quick_split(subset: int | None = None, seed: int = 0):
    """The quick profile's train/validation split of Fashion-MNIST (or `subset` images)."""
    from sweep.data import find_source, subset_and_split
    from sweep.profiles import get_profile

    profile = get_profile("quick")
    images, labels = find_source("fashion-mnist").training()
    return subset_and_split(
        images,
        labels,
        subset=subset or profile.subset,
        val_fraction=profile.val_fraction,
        seed=seed,
    )


def filter_configs() -> list[tuple[int, ...]]:
    """The four filter configurations of the filters study."""
    from sweep.space_file import load_space

    space = load_space(ROOT / "search_spaces" / "filters.yaml")
    return [space.config_for(space.decode(point)).filters for point in space.grid_points()]


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"Wrote {path}")
    return path


class EpochTimer:
    """An `on_epoch` hook for sweep.training.fit_autoencoder: seconds of each epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now

    def steady(self) -> float:
        """Median epoch time after the first (which includes tracing)."""
        import statistics

        return statistics.median(self.seconds[1:] or self.seconds)
