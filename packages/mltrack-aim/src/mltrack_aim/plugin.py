"""The ``mltrack`` entry point of mltrack-aim: announces the ``aim`` backend.

Importing this module must stay cheap (aim itself takes over a second to import), so the
backend module, and with it aim, is imported only when the backend is selected.
"""

from __future__ import annotations

from mltrack.config import BackendConfig
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack_aim.settings import AimOptions, preflight

__all__ = ["create_backend", "mltrack_register_backends"]


def create_backend(config: BackendConfig) -> object:
    """Build the Aim backend for ``config`` (imports aim)."""
    from mltrack_aim.backend import AimBackend

    return AimBackend.from_config(config)


@hookimpl
def mltrack_register_backends(register: RegisterBackend) -> None:
    """Announce the ``aim`` backend."""
    register(
        "aim",
        create_backend,
        persistent=True,
        description="Aim repository on disk, or a remote `aim server` (aim://host:port).",
        out_of_process=True,
        preflight=preflight,
        options=AimOptions,  # a mistyped option is an error, not a write to ./aim_logs
        backend_class="mltrack_aim.backend:AimBackend",
    )
