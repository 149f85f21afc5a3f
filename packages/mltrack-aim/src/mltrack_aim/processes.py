"""Start and stop Aim's own servers: ``aim up`` (the web UI) and ``aim server`` (remote tracking).

Each runs in its own process group (see :mod:`mltrack.servers`), so stopping it also ends
the uvicorn master and workers ``aim up`` spawns.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mltrack.servers import ServerProcess, free_port, start_server

__all__ = ["AimProcess", "free_port", "start_aim_server", "start_aim_ui"]

# Runs aim's CLI with this interpreter, so the aim of this environment answers, not one on PATH.
_AIM_CLI = (
    "import sys; from aim.cli.cli import cli_entry_point; sys.argv[0] = 'aim'; sys.exit(cli_entry_point())"
)
_NO_TELEMETRY = {"AIM_UI_TELEMETRY_ENABLED": "0", "AIM_TELEMETRY_ENABLED": "0"}


class AimProcess(ServerProcess):
    """A running ``aim up`` or ``aim server`` for the local repository ``repo``."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path, repo: str) -> None:
        super().__init__(proc, url, log_path)
        self.repo = repo

    @property
    def address(self) -> str:
        """``aim://host:port`` for a tracking server (what mltrack's ``repo_path`` takes)."""
        return "aim://" + self.url.split("://", 1)[1].rstrip("/")


def _start(
    command: str, repo: str | os.PathLike[str], host: str, port: int | None, probe: str, timeout: float
) -> AimProcess:
    from mltrack_aim.store import ensure_repo  # imports aim; only needed when starting a server

    path = str(Path(repo).expanduser().resolve())
    ensure_repo(path)
    port = port or free_port(host)
    return start_server(
        [sys.executable, "-c", _AIM_CLI, command, "--host", host, "--port", str(port), "--repo", path, "-y"],
        name=f"`aim {command}`",
        url=f"http://{host}:{port}",
        probe=probe,
        env=_NO_TELEMETRY,
        timeout=timeout,
        wrap=lambda proc, url, log: AimProcess(proc, url, log, path),
    )


def start_aim_ui(
    repo: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> AimProcess:
    """Start Aim's web UI (``aim up``) for a local repository; returns once it answers.

    ``port`` defaults to a free one; the URL is ``AimProcess.url``. Call ``stop()`` to end it.
    """
    return _start("up", repo, host, port, "/api/projects/", timeout)


def start_aim_server(
    repo: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> AimProcess:
    """Start a remote tracking server (``aim server``) for a local repository.

    Clients use ``AimProcess.address`` (``aim://host:port``) as their ``repo_path``.
    """
    return _start("server", repo, host, port, "/status/", timeout)
