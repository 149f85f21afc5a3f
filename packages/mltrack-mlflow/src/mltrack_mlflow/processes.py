"""Start and stop MLflow's own server (``mlflow server``: tracking API and web UI in one).

It runs in its own session (``setsid``), so stopping it kills the whole process group:
``mlflow server`` starts uvicorn workers and a job runner that outlive a plain SIGTERM to
the ``mlflow`` process itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from mltrack.errors import BackendError
from mltrack_mlflow.settings import sqlite_uri

__all__ = ["MlflowProcess", "free_port", "start_mlflow_server", "start_mlflow_ui"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MlflowProcess:
    """A running ``mlflow server``; ``stop()`` ends it and every child it started."""

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, backend_store_uri: str, log_path: Path
    ) -> None:
        self.proc = proc
        self.url = url
        self.backend_store_uri = backend_store_uri
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id, which is also its process-group id."""
        return self.proc.pid

    @property
    def tracking_uri(self) -> str:
        """``http://host:port``: what clients (and mltrack's ``tracking_uri``) use."""
        return self.url

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def group_alive(self) -> bool:
        """True while any process of its group (uvicorn workers, job runner) is left."""
        return _group_alive(self.proc.pid)

    def log(self) -> str:
        """What the process printed so far (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process and all its children (SIGTERM to the group, then SIGKILL)."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not _group_alive(self.proc.pid):
                    return
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1)

    def __enter__(self) -> MlflowProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _start(
    backend_store_uri: str, artifacts_dir: Path, host: str, port: int | None, workers: int, timeout: float
) -> MlflowProcess:
    port = port or free_port(host)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"mltrack-mlflow-server-{port}-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    args = [
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
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(
            # This interpreter's mlflow, not whichever `mlflow` is first on PATH.
            [sys.executable, "-m", "mlflow", *args],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends uvicorn and the job runner too
            env={
                # mltrack needs neither MLflow's GenAI job runner (eight more processes) nor telemetry.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                **os.environ,
            },
        )
    server = MlflowProcess(proc, f"http://{host}:{port}", backend_store_uri, log_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BackendError(
                    f"`mlflow server` exited with code {proc.returncode} before answering on port {port}: "
                    f"{server.log()[-2000:]}"
                )
            if http_ok(server.url + "/health"):
                return server
            time.sleep(0.25)
    except BaseException:  # Ctrl-C while waiting must not leave the server and its workers behind
        server.stop()
        raise
    server.stop()
    raise BackendError(
        f"`mlflow server` did not answer on {server.url} within {timeout:.0f} s; its output: "
        f"{server.log()[-2000:]}"
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
    as their ``tracking_uri``; call ``stop()`` to end it.
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
