"""Training speed on a GPU: images per second of the four filter configurations, with the
machine's CPU beside them. Meant for a GPU machine; finishes in a few minutes there.

    python benchmarks/gpu.py [--output runs] [--epochs 3] [--cpu-subset 6000]

GPU rows train on the full profile's split (48,000 training images) in the precision "auto"
picks there, with XLA; CPU rows (float32, compiled as sweeps compile on a CPU, forced onto the
CPU in the same process) on `--cpu-subset` images. Works with Keras' TensorFlow and JAX
backends (KERAS_BACKEND=jax on a GPU machine that has JAX but no TensorFlow).
Images per second are from the median epoch after the first (which includes tracing and
compilation). Prints a table, writes <output>/benchmarks/gpu.csv, ends with the key figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import EpochTimer, filter_configs, quick_split, write_csv


def measure(filters, split, epochs: int, device: str, precision: str, xla: bool) -> dict:
    import keras

    from models.autoencoder import build_autoencoder
    from models.config import AutoencoderConfig
    from sweep.training import fit_autoencoder, live_graphs, release, seed_everything

    config = AutoencoderConfig(filters=filters, precision=precision, epochs=epochs, patience=epochs)
    graphs = live_graphs()
    with keras.device(device):
        seed_everything(0)
        model = build_autoencoder(config, jit_compile=xla)
        timer = EpochTimer()
        timer.start()
        fit = fit_autoencoder(model, split, config, timer)
    del model
    release(graphs)
    return {
        "filters": "-".join(map(str, filters)),
        "device": device.split(":")[0],
        "precision": precision,
        "train_images": len(split.x_train),
        "images_per_s": round(len(split.x_train) / timer.steady(), 1),
        "best_val_loss": round(fit.best_val_loss, 6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpu-subset", type=int, default=6000)
    args = parser.parse_args()

    from sweep.tf_env import default_precision, has_gpu, import_keras_quietly

    backend = import_keras_quietly().backend.backend()
    if not has_gpu():
        print(f"gpu: no GPU visible to Keras' {backend} backend here; run this on a GPU machine")
        return 1
    gpu_precision = default_precision()
    cpu_precision = "float32"  # what "auto" means on a CPU
    cpu_xla = backend == "jax"  # what use_xla() means on a CPU: JAX always compiles
    full, small = quick_split(60_000), quick_split(args.cpu_subset)
    rows = []
    print(
        f"Keras {backend} backend; GPU: {args.epochs} epochs on {len(full.x_train):,} images, "
        f"CPU: {max(2, args.epochs - 1)} on {len(small.x_train):,}",
        flush=True,
    )
    print(f"{'filters':<14}{'GPU img/s':>12}{'CPU img/s':>12}{'GPU/CPU':>9}", flush=True)
    for filters in filter_configs():
        gpu = measure(filters, full, args.epochs, "gpu:0", gpu_precision, xla=True)
        cpu = measure(filters, small, max(2, args.epochs - 1), "cpu:0", cpu_precision, cpu_xla)
        rows += [gpu, cpu]
        print(
            f"{gpu['filters']:<14}{gpu['images_per_s']:>12.0f}{cpu['images_per_s']:>12.0f}"
            f"{gpu['images_per_s'] / cpu['images_per_s']:>8.1f}x",
            flush=True,
        )
    write_csv(Path(args.output) / "benchmarks" / "gpu.csv", rows)
    ratio = statistics.median(
        g["images_per_s"] / c["images_per_s"] for g, c in zip(rows[::2], rows[1::2], strict=True)
    )
    print(
        f"gpu: {gpu_precision} on the GPU at a median {ratio:.1f}x the CPU's images/s "
        f"({cpu_precision}) over the four filter configurations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
