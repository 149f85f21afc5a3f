"""Start and stop MLflow's own server (``mlflow server``: tracking API and web UI in one).

It runs in its own process group (see :mod:`mltrack.servers`), so stopping it also ends the
uvicorn workers ``mlflow server`` starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mltrack.servers import ServerProcess, free_port, http_ok, start_server
from mltrack_mlflow.settings import sqlite_uri

__all__ = ["MlflowProcess", "free_port", "http_ok", "start_mlflow_server", "start_mlflow_ui"]

# mltrack needs neither MLflow's GenAI job runner (eight more processes) nor its telemetry;
# a user's own setting of either wins.
_SERVER_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


class MlflowProcess(ServerProcess):
    """A running ``mlflow server`` on the store ``backend_store_uri``."""

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, log_path: Path, backend_store_uri: str
    ) -> None:
        super().__init__(proc, url, log_path)
        self.backend_store_uri = backend_store_uri

    @property
    def tracking_uri(self) -> str:
        """``http://host:port``: what clients (and mltrack's ``tracking_uri``) use."""
        return self.url


def _start(
    backend_store_uri: str, artifacts_dir: Path, host: str, port: int | None, workers: int, timeout: float
) -> MlflowProcess:
    port = port or free_port(host)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        # This interpreter's mlflow, not whichever `mlflow` is first on PATH.
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return start_server(
        argv,
        name="`mlflow server`",
        url=f"http://{host}:{port}",
        probe="/health",
        env={k: v for k, v in _SERVER_DEFAULTS.items() if k not in os.environ},
        timeout=timeout,
        wrap=lambda proc, url, log_path: MlflowProcess(proc, url, log_path, backend_store_uri),
    )


def start_mlflow_server(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 1,
    timeout: float = 90.0,
) -> MlflowProcess:
    """Start an MLflow tracking server storing into folder ``root``; returns once it answers.

    Runs are kept in ``<root>/mlflow.db`` (SQLite), artifacts in ``<root>/artifacts`` (served
    by the server). ``port`` defaults to a free one. Clients use ``MlflowProcess.tracking_uri``
    as their ``tracking_uri``; call ``stop()`` to end it and its workers.
    """
    folder = Path(root).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return _start(sqlite_uri(folder), folder / "artifacts", host, port, workers, timeout)


def start_mlflow_ui(
    backend_store_uri: str,
    artifacts_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 90.0,
) -> MlflowProcess:
    """Start MLflow's web UI (an ``mlflow server``) on an existing store, e.g. ``sqlite:///...``."""
    return _start(backend_store_uri, Path(artifacts_dir).expanduser().resolve(), host, port, 1, timeout)
