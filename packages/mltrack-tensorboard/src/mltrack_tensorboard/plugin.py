"""The ``mltrack`` entry point of mltrack-tensorboard: announces the ``tensorboard`` backend.

Importing this module stays cheap: tensorboard's protocol buffers and the backend are imported only when the
backend is selected (in mltrack's writer process, or by a reader).
"""

from __future__ import annotations

from mltrack.config import BackendConfig
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack_tensorboard.settings import TensorboardOptions, preflight

__all__ = ["create_backend", "mltrack_register_backends"]


def create_backend(config: BackendConfig) -> object:
    """Build the TensorBoard backend for ``config`` (imports tensorboard's protocol buffers)."""
    from mltrack_tensorboard.backend import TensorboardBackend

    return TensorboardBackend.from_config(config)


@hookimpl
def mltrack_register_backends(register: RegisterBackend) -> None:
    """Announce the ``tensorboard`` backend."""
    register(
        "tensorboard",
        create_backend,
        persistent=True,
        description="TensorBoard event files: <logdir>/<experiment>/<run name>-<id>, HParams tab included.",
        # A separate writer process, as for the other stores: a killed trainer loses nothing it
        # handed over, and its open runs are finished CRASHED.
        out_of_process=True,
        preflight=preflight,
        options=TensorboardOptions,
        backend_class="mltrack_tensorboard.backend:TensorboardBackend",
    )
