"""Run profiles: how much data and how many epochs a sweep uses unless the config says."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import AutoencoderConfig
from sweep.errors import SweepError


@dataclass(frozen=True)
class Profile:
    """`subset` images of the training file (None: all) are split 80/20 into train/validation;
    `jobs` trials train at once unless `--jobs` says (sweep.slots: "auto" from the machine)."""

    name: str
    subset: int | None
    epochs: int
    patience: int
    val_fraction: float = 0.2
    precision: str = "auto"
    jobs: int | str = "auto"

    def apply(self, config: AutoencoderConfig) -> AutoencoderConfig:
        """Fill the config's unset epochs and patience with this profile's, and settle an
        autoencoder's "auto" precision: the profile's, else the fastest for this machine.
        These are the project's own values, so they are not checked again."""
        filled = config.with_normalised(
            epochs=config.epochs if config.epochs is not None else self.epochs,
            patience=config.patience if config.patience is not None else self.patience,
        )
        if getattr(filled, "precision", None) != "auto":
            return filled
        if self.precision != "auto":
            return filled.with_normalised(precision=self.precision)
        from sweep.tf_env import default_precision

        return filled.with_normalised(precision=default_precision())


PROFILES = {
    # Sized so that the four filter configurations finish in minutes on a 2-core CPU.
    "quick": Profile("quick", subset=12_000, epochs=6, patience=2),
    # All 60,000 training images, long training with early stopping: for GPU machines.
    "full": Profile("full", subset=None, epochs=100, patience=4),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SweepError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}") from None
