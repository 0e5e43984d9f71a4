"""Hyperparameter sweeps of a convolutional autoencoder, tracked in Optuna and MLflow."""

__version__ = "0.1.0"
