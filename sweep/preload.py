"""Imported once by the server that trial processes fork from (sweep.worker): Keras, its
backend and the model builders, with no device touched, so each trial starts without the
import's seconds and initialises its own devices."""

import signal

from sweep.tf_env import import_keras_quietly

# A SIGTERM sent to the sweep's whole process group must not end this server before the sweep
# has recorded its trials; the server ends on its own when the sweep does (multiprocessing).
signal.signal(signal.SIGTERM, signal.SIG_IGN)

import_keras_quietly(initialise=False)

import models.autoencoder  # noqa: E402, F401
import sweep.training  # noqa: E402, F401
