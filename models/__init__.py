"""Pure Keras model builders: no optuna, no mlflow, no CLI."""

from __future__ import annotations

from models.config import AutoencoderConfig, ConfigError

__all__ = ["AutoencoderConfig", "ConfigError"]
