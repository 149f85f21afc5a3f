"""The ``mltrack`` entry point of mltrack-mlflow: announces the ``mlflow`` backend.

Importing this module must stay cheap (mlflow itself takes over a second to import), so the
backend module, and with it mlflow, is imported only when the backend is selected.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mltrack.config import BackendConfig
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack_mlflow.settings import MlflowOptions, preflight

if TYPE_CHECKING:
    import click

__all__ = ["create_backend", "mltrack_register_backends", "mltrack_register_commands"]


def create_backend(config: BackendConfig) -> object:
    """Build the MLflow backend for ``config`` (imports mlflow).

    MLflow reports usage over the network when imported, unless told not to; mltrack imports it
    on the user's behalf (mostly in its own writer process), so that is off unless the user set
    ``MLFLOW_DISABLE_TELEMETRY`` themselves.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mltrack_mlflow.backend import MlflowBackend

    return MlflowBackend.from_config(config)


@hookimpl
def mltrack_register_backends(register: RegisterBackend) -> None:
    """Announce the ``mlflow`` backend."""
    register(
        "mlflow",
        create_backend,
        persistent=True,
        description="MLflow tracking store: local SQLite (sqlite:///.../mlflow.db) or an MLflow server (http://).",
        # A separate writer process: the trainer never imports mlflow, and a killed trainer
        # loses nothing it handed over (its open runs are marked CRASHED).
        out_of_process=True,
        preflight=preflight,  # a store that cannot take a run fails create_run, not the writer later
        options=MlflowOptions,  # a mistyped option is an error, not a write to ./mlflow_logs
        backend_class="mltrack_mlflow.backend:MlflowBackend",
    )


@hookimpl
def mltrack_register_commands(cli: click.Group) -> None:
    """Add ``mltrack cluster up|down|env`` (the reference deployment; needs ``mltrack-mlflow[cluster]``)."""
    from mltrack_mlflow.cluster_cli import cluster

    cli.add_command(cluster)
