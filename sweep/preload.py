"""Imported once by the server that trial processes fork from (sweep.worker): Keras, its
backend and the model builders, with no device touched, so each trial starts without the
import's seconds and initialises its own devices."""

from sweep.tf_env import import_keras_quietly

import_keras_quietly(initialise=False)

import models.autoencoder  # noqa: E402, F401
import sweep.training  # noqa: E402, F401
