"""How many trials one sweep process runs at once, and what each may use: the slots.

A small convolutional autoencoder does not keep a CPU's cores busy from one TensorFlow
process: on a 2-core AVX2 machine, two single-thread trials of [32, 64, 128] side by side
trained 1.8x the images of one. So a sweep runs up to `jobs` trials at once, each in its own
process limited to `threads` threads (twice its share of the cores: see SHARE_FACTOR), or on
its own GPU when there are GPUs. benchmarks/slots.py measures it; the README quotes it.

`choose` decides from what the user asked (`--jobs N|auto`, `--threads`, `--gpus`) and what the
machine has (the cores this process may use, its cgroup's CPU quota, the memory available, the
GPUs visible). Knows nothing of Optuna or TensorFlow; tf_env applies a slot in a trial's process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import SweepError

AUTO = "auto"
# Trials at once per GPU under `auto`. Small models leave a modern GPU mostly idle, so more than
# one per GPU is likely faster, but that is not measured yet: `benchmarks/slots.py --profile
# full --arm "--jobs 1 --gpus 0" --arm "--jobs 2 --gpus 0" --arm "--jobs 4 --gpus 0"` measures
# k = 1, 2, 4 on a GPU machine, and this follows its best. Until then one, as before slots.
TRIALS_PER_GPU = 1
# What one trial's process needs besides its copy of the data (TensorFlow, the model, Keras'
# buffers): the largest quick-profile filters trial peaked at 1,204 MiB resident, its split
# included, on the 2-core CPU of the README (benchmarks/slots.py); 1.5 GiB leaves headroom.
TRIAL_BASE_BYTES = 1536 * 2**20
# Each CPU slot's threads, as a multiple of its share of the cores. Trials end at different
# times, and a running TensorFlow process cannot take more threads later: with exactly its
# share, the last (largest) trial trains on one core while the others sit idle. On the 2-core
# CPU of the README, two trials of 2 threads finished the filters sweep in 559.8 s against
# 604.0 s for two of 1 thread (benchmarks/slots.py); threads beyond that only add contention.
SHARE_FACTOR = 2


@dataclass(frozen=True)
class Slot:
    """One of the run's slots: its index, the threads its trials may use (None: the library's
    default, every core) and the GPU they see (None: no restriction; "" none at all)."""

    index: int
    threads: int | None = None
    gpu: str | None = None

    @property
    def device(self) -> str:
        return "cpu" if not self.gpu else f"gpu:{self.gpu}"

    def record(self, jobs: int) -> dict[str, str | int]:
        """What each trial run records of the slot it ran in."""
        return {"jobs": jobs, "threads": self.threads or "default", "device": self.device}


@dataclass(frozen=True)
class Slots:
    """`jobs` trials at once, `threads` each on the CPU (None: no limit), round-robin over
    `gpus`; `why` says how the numbers were chosen."""

    jobs: int = 1
    threads: int | None = None
    gpus: tuple[str, ...] = ()
    why: str = "one at a time"

    def slot(self, index: int) -> Slot:
        gpu = self.gpus[index % len(self.gpus)] if self.gpus else None
        return Slot(index, self.threads, gpu)

    def describe(self) -> str:
        """E.g. "2 trials at a time, 2 threads each (auto: 2 cores)"."""
        at_once = "1 trial at a time" if self.jobs == 1 else f"{self.jobs} trials at a time"
        if self.gpus:
            where = f"on GPU {', '.join(self.gpus)}"
        elif self.threads:
            where = f"{self.threads} thread{'s' if self.threads > 1 else ''} each"
        else:
            where = "all cores"
        return f"{at_once}, {where} ({self.why})"


def parse_jobs(text: str | int | None) -> int | str | None:
    """`--jobs`: a whole number from 1, or "auto"."""
    if text is None or text == AUTO:
        return text
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise SweepError(f"--jobs must be a whole number or auto, got {str(text)[:40]!r}") from None
    if value < 1:
        raise SweepError(f"--jobs must be at least 1 (or auto), got {value}")
    return value


def parse_gpus(text: str | None) -> tuple[str, ...] | None:
    """`--gpus`: "0,1" (device indices as CUDA numbers them), "none", or None (auto)."""
    if text is None or text == AUTO:
        return None
    if text.strip().lower() in ("none", ""):
        return ()
    ids = tuple(part.strip() for part in text.split(","))
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise SweepError(
            f"--gpus must list distinct GPU numbers like 0,1 (or none, or auto), got {text[:40]!r}"
        )
    return ids


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, within its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def available_memory() -> int | None:
    """The memory this process can still take, in bytes: MemAvailable from /proc/meminfo,
    within its cgroup's limit (memory.max less memory.current); None where neither is known."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def choose(
    jobs: int | str | None,
    *,
    to_run: int,
    threads: int | None = None,
    gpus: tuple[str, ...] | None = None,
    visible_gpus: int = 0,
    data_bytes: int = 0,
    can_share: bool = True,
    cores: int | None = None,
    memory: int | None = None,
) -> Slots:
    """The run's slots. `jobs` None or "auto": from the machine; a number: exactly that many
    (refused where trials cannot share the machine: `can_share` False). `to_run` caps them (no
    idle slot); `data_bytes` is the size of the split each trial's process gets a copy of."""
    if threads is not None and threads < 1:
        raise SweepError(f"--threads must be at least 1, got {threads}")
    if not can_share:
        if isinstance(jobs, int) and jobs > 1:
            raise SweepError(
                f"--jobs {jobs}: these trials train in the sweep's own process (a classifier "
                "space, the keras-tuner backend or --in-process), one at a time; use --jobs 1"
            )
        return Slots(1, threads, (), "one at a time: trials train in this process")
    cores = cores or usable_cores()
    if gpus is None:
        gpus = tuple(str(i) for i in range(visible_gpus))
    elif missing := [g for g in gpus if int(g) >= visible_gpus]:
        raise SweepError(
            f"--gpus {','.join(gpus)}: GPU {missing[0]} is not visible (this sweep sees "
            f"{visible_gpus} GPU{'' if visible_gpus == 1 else 's'}, numbered from 0); "
            "use --gpus none for the CPU"
        )
    per_trial = TRIAL_BASE_BYTES + data_bytes
    memory = memory if memory is not None else available_memory()
    fit = max(1, memory // per_trial) if memory else None
    if isinstance(jobs, int):
        n, why = jobs, f"--jobs {jobs}"
    elif gpus:
        n = TRIALS_PER_GPU * len(gpus)
        why = f"auto: {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}, {TRIALS_PER_GPU} each"
    else:
        n, why = cores, f"auto: {cores} core{'s' if cores > 1 else ''}"
        if fit is not None and fit < n:
            n, why = fit, f"auto: memory for {fit} of {cores} cores"
    n = max(1, min(n, to_run))
    if threads is None and n > 1 and not gpus:
        threads = max(1, min(cores, SHARE_FACTOR * cores // n))
    return Slots(n, threads, gpus, why)


def check(jobs: int | str | None, threads: int | None, can_share: bool) -> None:
    """Refuse what `choose` would refuse, before anything is loaded or recorded."""
    choose(jobs, to_run=1, threads=threads, gpus=(), can_share=can_share, cores=1, memory=0)
