"""Import Keras without the screenful of start-up logs TensorFlow prints.

TensorFlow is Keras' backend here; KERAS_BACKEND=jax (or torch) also works, e.g. on a GPU
machine that has JAX but no TensorFlow."""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX;
# elsewhere (AVX2-only CPUs, most laptops and small cloud machines) convolutions fall back to
# kernels built without AVX2/FMA, and trained at a half to two thirds of oneDNN's images/s on
# the README's 2-core AVX2 EPYC (benchmarks/onednn.py). Set TF_ENABLE_ONEDNN_OPTS=0 to turn it
# off; TensorFlow reads it when it loads, so it is set here, before any import of it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# JAX: a trial takes the GPU memory it needs, not 75% of it up front (sweep.worker)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


_initialised = False


def import_keras_quietly(initialise: bool = True):
    """Import keras and (unless `initialise` is False) initialise its devices, with stderr
    silenced at the file-descriptor level.

    TensorFlow's native start-up messages bypass TF_CPP_MIN_LOG_LEVEL; they are captured and
    shown only if the import fails. Without `initialise` no device is touched: what a process
    that forks trial processes needs (sweep.worker), and what lets a sweep leave the GPU's
    memory to its trials.
    """
    global _initialised
    if "keras" in sys.modules and (_initialised or not initialise):
        return sys.modules["keras"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.get_logger().setLevel("ERROR")
            if initialise:
                keras.ops.convert_to_tensor(0.0)
                _initialised = True
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return keras


def has_gpu() -> bool:
    """Whether Keras' backend sees a GPU (asked without initialising any device)."""
    keras = import_keras_quietly(initialise=False)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() == "gpu"
    return False


def use_xla() -> bool:
    """Whether to compile the train step (Keras' jit_compile).

    TensorFlow: on GPUs only; on the 2-core CPU of the README an XLA-compiled autoencoder
    trained at under half the images/s of the plain one, after a first epoch of 30-40 s
    compiling (see the README's precision benchmark). JAX: always, since without jit it runs
    op by op. Torch: never (torch.compile recompiles for every trial's model)."""
    backend = import_keras_quietly(initialise=False).backend.backend()
    if backend == "jax":
        return True
    return backend == "tensorflow" and has_gpu()


def default_precision() -> str:
    """The precision "auto" means here: mixed_bfloat16 on GPUs of compute capability 8.0 or
    later, else float32.

    On CPUs with bfloat16 instructions, benchmarks/precision.py measured mixed_bfloat16 at 1.47x
    float32's images/s but 3.9% worse val_loss on the largest filter configuration, outside the
    2% a default may cost (see the README); choose it with `--set precision=mixed_bfloat16`."""
    keras = import_keras_quietly(initialise=False)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get(
                "compute_capability", (0, 0)
            )
            return "mixed_bfloat16" if tuple(capability) >= (8, 0) else "float32"
    elif backend == "jax":
        import jax

        if jax.default_backend() == "gpu":
            return "mixed_bfloat16"
    return "float32"


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none to read)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def precision_note(precision: str) -> str | None:
    """A one-line warning when `precision` is known to train slower than float32 on this
    machine (no GPU): mixed_float16 on any CPU, mixed_bfloat16 on a CPU without bfloat16
    instructions (AVX512_BF16 or AMX), where it is emulated. None otherwise."""
    if precision not in ("mixed_bfloat16", "mixed_float16") or has_gpu():
        return None
    if precision == "mixed_float16":
        return (
            "precision mixed_float16 on a CPU trains far slower than float32; use float32 or auto"
        )
    flags = cpu_flags()
    if flags is None or flags & {"avx512_bf16", "amx_bf16"}:
        return None
    return (
        "precision mixed_bfloat16 on this CPU (no AVX512_BF16 or AMX bfloat16 instructions) is "
        "emulated and trains slower than float32; use float32 or auto"
    )


def confine(threads: int | None, gpu: str | None) -> None:
    """In a trial's own process, before its backend touches a device: use at most `threads`
    threads (TensorFlow's intra- and inter-op pools; the OpenMP and BLAS variables reach only
    libraries loaded after this) and see only GPU `gpu` (a number among the GPUs the sweep sees;
    "" none; None leaves the devices alone), with its memory taken as needed so several trials
    can share it. The sweep process itself is never confined."""
    if gpu:
        # GPU numbers count the GPUs this sweep sees: under a scheduler that already narrowed
        # them (CUDA_VISIBLE_DEVICES=3,5), GPU 1 is device 5.
        inherited = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
        if inherited:
            if int(gpu) >= len(inherited):
                raise RuntimeError(
                    f"GPU {gpu} is not among the {len(inherited)} this sweep sees "
                    f"(CUDA_VISIBLE_DEVICES={','.join(inherited)})"
                )
            gpu = inherited[int(gpu)]
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(threads)
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    keras = import_keras_quietly(initialise=False)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)
    elif backend == "jax" and threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    elif backend == "torch" and threads:
        import torch

        torch.set_num_threads(threads)


def runtime_settings() -> dict[str, int]:
    """What this process's backend trains with, as a trial records it: its thread pools (0: the
    library's default) and whether TensorFlow's oneDNN kernels are on."""
    keras = import_keras_quietly(initialise=False)
    if keras.backend.backend() != "tensorflow":
        return {}
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn": int(os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0") not in ("0", "false", "")),
    }


def gpu_count() -> int:
    """How many GPUs Keras' backend sees (asked without initialising any device)."""
    keras = import_keras_quietly(initialise=False)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return len(jax.devices("gpu")) if jax.default_backend() == "gpu" else 0
    return 0
