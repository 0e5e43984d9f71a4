"""TensorFlow's oneDNN kernels on and off: training images/s of each filter configuration
(search_spaces/filters.yaml) with 1 and 2 threads, each measurement a fresh process (the
setting is read when TensorFlow loads), interleaved over rounds.

    python benchmarks/onednn.py [--output runs] [--rounds 2] [--images 1024] [--epochs 3]

Each process trains the configuration on the first `--images` training images of the quick
profile's split (batch 256) for one warm-up epoch, then `--epochs` timed epochs, and prints its
images/s and last training loss. TensorFlow turns oneDNN on by itself only on CPUs with AVX-512
VNNI, BF16 or AMX; sweep.tf_env turns it on everywhere unless TF_ENABLE_ONEDNN_OPTS is set.
Writes <output>/benchmarks/onednn.csv and ends with the on/off ratio per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, filter_configs, write_csv

CHILD = r"""
import json, sys, time
threads, filters, images, epochs = json.loads(sys.argv[1])
from sweep.tf_env import import_keras_quietly
keras = import_keras_quietly(initialise=False)
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
sys.path.insert(0, "benchmarks")
from common import quick_split
from models.autoencoder import build_autoencoder
from models.config import AutoencoderConfig
split = quick_split()
x = split.x_train[:images]
keras.utils.set_random_seed(0)
config = AutoencoderConfig(filters=tuple(filters), pool_blocks=2, kernel_size=3)
model = build_autoencoder(config, x.shape[1:], jit_compile=False)
model.fit(x, x, batch_size=256, epochs=1, verbose=0)
started = time.perf_counter()
history = model.fit(x, x, batch_size=256, epochs=epochs, verbose=0)
seconds = time.perf_counter() - started
print(json.dumps({"images_per_second": images * epochs / seconds,
                  "loss": history.history["loss"][-1]}))
"""


def measure(onednn: str, threads: int, filters, args) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    spec = json.dumps([threads, list(filters), args.images, args.epochs])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, spec], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for round_ in range(args.rounds):
        for filters in filter_configs():
            for threads in (1, 2):
                order = ("0", "1") if round_ % 2 == 0 else ("1", "0")
                for onednn in order:
                    result = measure(onednn, threads, filters, args)
                    row = {"round": round_, "filters": str(list(filters)), "threads": threads}
                    rows.append({**row, "onednn": onednn, **result})
                    print(
                        f"round {round_}  filters {row['filters']:<16} threads {threads}  "
                        f"oneDNN {'on ' if onednn == '1' else 'off'}  "
                        f"{result['images_per_second']:8.1f} images/s  loss {result['loss']:.6f}",
                        flush=True,
                    )
    write_csv(Path(args.output) / "benchmarks" / "onednn.csv", rows)
    for filters in {r["filters"]: None for r in rows}:
        for threads in (1, 2):
            speed = {
                o: statistics.mean(
                    r["images_per_second"]
                    for r in rows
                    if r["filters"] == filters and r["threads"] == threads and r["onednn"] == o
                )
                for o in ("0", "1")
            }
            print(
                f"filters {filters:<16} threads {threads}: off {speed['0']:7.1f}  "
                f"on {speed['1']:7.1f} images/s  on/off {speed['1'] / speed['0']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
