"""The ``mltrack`` entry point of mltrack-wandb: announces the ``wandb`` backend.

Importing this module stays cheap: wandb (about a second to import) is imported only where the
backend is built, in mltrack's writer process or a reader, never in the training process.
"""

from __future__ import annotations

from mltrack.config import BackendConfig
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack_wandb.settings import WandbOptions, preflight

__all__ = ["create_backend", "mltrack_register_backends"]


def create_backend(config: BackendConfig) -> object:
    """Build the W&B backend for ``config`` (imports wandb's protocol buffers)."""
    from mltrack_wandb.backend import WandbBackend

    return WandbBackend.from_config(config)


@hookimpl
def mltrack_register_backends(register: RegisterBackend) -> None:
    """Announce the ``wandb`` backend."""
    register(
        "wandb",
        create_backend,
        persistent=True,
        description="W&B offline run folders <root>/wandb/offline-run-*, uploaded by `wandb sync`, read without a server.",
        # The writer process keeps wandb's import out of the training process, stores what a
        # killed trainer handed over and finishes its runs CRASHED.
        out_of_process=True,
        preflight=preflight,
        options=WandbOptions,
        backend_class="mltrack_wandb.backend:WandbBackend",
    )
