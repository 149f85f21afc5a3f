"""mltrack-wandb: the Weights & Biases backend of mltrack (offline run folders, read without a server).

``import mltrack_wandb`` does not import wandb; the backend does, when it is selected.
"""

from __future__ import annotations

from mltrack_wandb.settings import WandbOptions, WandbSettings, configure_wandb_backend

__version__ = "0.1.0"

__all__ = ["WandbOptions", "WandbSettings", "configure_wandb_backend"]
