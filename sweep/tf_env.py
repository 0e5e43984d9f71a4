"""Import Keras without the screenful of start-up logs TensorFlow prints.

TensorFlow is Keras' backend here; KERAS_BACKEND=jax (or torch) also works, e.g. on a GPU
machine that has JAX but no TensorFlow."""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_keras_quietly():
    """Import keras and initialise its devices with stderr silenced at the file-descriptor level.

    TensorFlow's native start-up messages bypass TF_CPP_MIN_LOG_LEVEL; they are captured and
    shown only if the import fails.
    """
    if "keras" in sys.modules:
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
            keras.ops.convert_to_tensor(0.0)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return keras
