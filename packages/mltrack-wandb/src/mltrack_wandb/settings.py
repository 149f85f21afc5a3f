"""Where and how the W&B backend writes: its options, store folder, mode and timeout.

Imports nothing of wandb, so the plugin module (loaded by every mltrack process) and the
``preflight`` check (run in the training process) stay cheap.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from mltrack.authoring import StoreDirectory
from mltrack.config import BackendConfig, TrackingConfig, configure_backend, parse_backend_options
from mltrack.errors import ConfigurationError
from mltrack.settings import env

__all__ = [
    "DEFAULT_ROOT",
    "WandbOptions",
    "WandbSettings",
    "configure_wandb_backend",
    "preflight",
]

DEFAULT_ROOT = "./wandb_logs"
ONLINE_MODES = ("online", "run", "shared")
"""``WANDB_MODE`` values that upload (W&B's spellings)."""
OFFLINE_MODES = ("offline", "dryrun", "disabled")
"""``WANDB_MODE`` values that write run folders only."""


@attrs.frozen(kw_only=True)
class WandbOptions:
    """The options of the ``wandb`` backend: ``configure_wandb_backend(...)``,
    ``configure_backend("wandb", ...)``, ``mltrack copy --to-option root=...``."""

    root: str | None = attrs.field(
        default=None,
        metadata={
            "help": "folder holding the wandb/ run folders (default: ML_STORAGE_PATH, else ./wandb_logs)"
        },
    )
    mode: str | None = attrs.field(
        default=None,
        metadata={"help": "offline, or online to upload finished runs with wandb sync (default: WANDB_MODE)"},
    )
    timeout: float | None = attrs.field(
        default=None,
        metadata={
            "help": "seconds closing waits for uploads before stopping them (default: MLTRACK_WANDB_TIMEOUT)"
        },
    )
    entity: str | None = attrs.field(
        default=None, metadata={"help": "W&B entity (team or user) the runs belong to (default: W&B's own)"}
    )


@attrs.frozen
class WandbSettings:
    """The resolved settings of one W&B backend."""

    store: StoreDirectory
    online: bool
    timeout: float
    entity: str

    @classmethod
    def from_config(cls, config: BackendConfig) -> WandbSettings:
        """Resolve the options mltrack hands to the ``wandb`` factory (options win over the environment)."""
        options = parse_backend_options("wandb", WandbOptions, config.options)
        store = StoreDirectory.resolve(config, DEFAULT_ROOT, option=options.root, option_name="root")
        mode = (options.mode or env("WANDB_MODE") or "offline").strip().lower()
        if mode not in ONLINE_MODES + OFFLINE_MODES:
            setting = "the mode option" if options.mode else "WANDB_MODE"
            raise ConfigurationError(
                f"{setting}={mode!r} is not a W&B mode: use offline (write run folders for a later "
                "`wandb sync`) or online (also upload each finished run)"
            )
        timeout = float(options.timeout if options.timeout is not None else env("MLTRACK_WANDB_TIMEOUT"))
        return cls(store, mode in ONLINE_MODES, max(timeout, 0.0), options.entity or "")


def preflight(config: BackendConfig) -> None:
    """Raise ``BackendError`` if the store folder cannot take a new run (a few system calls)."""
    WandbSettings.from_config(config).store.preflight()


def configure_wandb_backend(
    root: str | os.PathLike[str] | None = None, experiment_name: str | None = None, **options: Any
) -> TrackingConfig:
    """Track into W&B run folders: ``configure_wandb_backend(root="./runs")``.

    Runs go to ``<root>/wandb/offline-run-<time>-<id>``, which ``wandb sync`` uploads; the
    experiment is the W&B project. ``mode="online"`` uploads each finished run itself.
    """
    if root is not None:
        options["root"] = os.fspath(root)
    if experiment_name is not None:
        options["experiment_name"] = experiment_name
    return configure_backend("wandb", **options)
