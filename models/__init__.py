"""Pure Keras model builders: no optuna, no mlflow, no CLI."""

from models.config import AutoencoderConfig, ConfigError

__all__ = ["AutoencoderConfig", "ConfigError"]
