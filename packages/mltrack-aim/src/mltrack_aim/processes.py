"""Start and stop Aim's own servers: ``aim up`` (the web UI) and ``aim server`` (remote tracking).

Each runs in its own session (``setsid``), so stopping it kills the whole process group:
``aim up`` spawns a uvicorn master and workers that outlive a plain SIGTERM to ``aim up``.
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

__all__ = ["AimProcess", "free_port", "start_aim_server", "start_aim_ui"]

# Runs aim's CLI with this interpreter, so the aim of this environment answers, not one on PATH.
_AIM_CLI = (
    "import sys; from aim.cli.cli import cli_entry_point; sys.argv[0] = 'aim'; sys.exit(cli_entry_point())"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class AimProcess:
    """A running ``aim up`` or ``aim server``; ``stop()`` ends it and every child it started."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, repo: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.repo = repo
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id, which is also its process-group id."""
        return self.proc.pid

    @property
    def address(self) -> str:
        """``aim://host:port`` for a tracking server (what mltrack's ``repo_path`` takes)."""
        return "aim://" + self.url.split("://", 1)[1].rstrip("/")

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

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

    def __enter__(self) -> AimProcess:
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


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _start(args: list[str], repo: str, host: str, port: int, probe: str, timeout: float) -> AimProcess:
    fd, log_name = tempfile.mkstemp(prefix=f"mltrack-aim-{args[0]}-{port}-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", _AIM_CLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills uvicorn workers too
            env={**os.environ, "AIM_UI_TELEMETRY_ENABLED": "0", "AIM_TELEMETRY_ENABLED": "0"},
        )
    aim_process = AimProcess(proc, f"http://{host}:{port}", repo, log_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BackendError(
                    f"`aim {args[0]}` exited with code {proc.returncode} before answering on port {port}: "
                    f"{aim_process.log()[-2000:]}"
                )
            if _http_ok(aim_process.url + probe):
                return aim_process
            time.sleep(0.25)
    except BaseException:  # Ctrl-C while waiting must not leave aim and its workers behind
        aim_process.stop()
        raise
    aim_process.stop()
    raise BackendError(
        f"`aim {args[0]}` did not answer on {aim_process.url} within {timeout:.0f} s; "
        f"its output: {aim_process.log()[-2000:]}"
    )


def _ensure_local_repo(repo: str | os.PathLike[str]) -> str:
    from mltrack_aim.store import ensure_repo  # imports aim; only needed when starting a server

    path = str(Path(repo).expanduser().resolve())
    ensure_repo(path)
    return path


def start_aim_ui(
    repo: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> AimProcess:
    """Start Aim's web UI (``aim up``) for a local repository; returns once it answers.

    ``port`` defaults to a free one; the URL is ``AimProcess.url``. Call ``stop()`` to end it.
    """
    path = _ensure_local_repo(repo)
    port = port or free_port(host)
    args = ["up", "--host", host, "--port", str(port), "--repo", path, "-y"]
    return _start(args, path, host, port, "/api/projects/", timeout)


def start_aim_server(
    repo: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> AimProcess:
    """Start a remote tracking server (``aim server``) for a local repository.

    Clients use ``AimProcess.address`` (``aim://host:port``) as their ``repo_path``.
    """
    path = _ensure_local_repo(repo)
    port = port or free_port(host)
    args = ["server", "--host", host, "--port", str(port), "--repo", path, "-y"]
    return _start(args, path, host, port, "/status/", timeout)
