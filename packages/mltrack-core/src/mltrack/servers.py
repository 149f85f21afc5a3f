"""Start and stop a store's own servers (web UIs, tracking servers) for backends and tests.

Each server runs in its own session (``setsid``), so stopping it kills its whole process
group: the servers of Aim and MLflow spawn uvicorn masters and workers that outlive a plain
SIGTERM to the command a user started. A guard process leads that group and ends it when
the process that started the server dies without stopping it (see :mod:`mltrack._guard`).
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

from mltrack.errors import BackendError

__all__ = ["ServerProcess", "free_port", "group_alive", "http_ok", "listening", "port_free", "start_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host``:``port`` (a store's default UI port, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listening(host: str, port: int) -> bool:
    """True if a process accepts connections on ``host``:``port`` (a port merely in TIME_WAIT is not)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` lives (one we may not signal counts as alive)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerProcess:
    """A running server; ``stop()`` ends it and every child it started."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id, which is also its process-group id."""
        return self.proc.pid

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def group_alive(self) -> bool:
        """True while any process of its group (workers, job runners) is left."""
        return group_alive(self.proc.pid)

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
                if self.proc.poll() is not None and not group_alive(self.proc.pid):
                    return
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


S = TypeVar("S", bound="ServerProcess")


def start_server(
    argv: Sequence[str],
    *,
    name: str,
    url: str,
    probe: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    wrap: Callable[[subprocess.Popen[bytes], str, Path], S],
) -> S:
    """Run ``argv`` in its own process group and return once ``url + probe`` answers HTTP 200.

    ``name`` is what error messages call it (e.g. "`aim up`"). ``env`` adds to this process's
    environment. ``wrap(proc, url, log_path)`` builds the :class:`ServerProcess` (or subclass)
    to return. Raises :class:`BackendError` with the server's output if it
    exits or does not answer within ``timeout`` seconds; it is stopped then.
    """
    where = urlsplit(url)
    if where.hostname and where.port and listening(where.hostname, where.port):
        # Its probe would be answered by whoever holds the port, not by the server started here.
        raise BackendError(
            f"{name}: another process already listens on {where.hostname}:{where.port}; choose another port"
        )
    fd, log_name = tempfile.mkstemp(prefix="mltrack-server-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(
            # The guard leads the group and ends it if this process dies without stop().
            [sys.executable, "-m", "mltrack._guard", "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills its workers too
            env={**os.environ, **(env or {})},
        )
    server = wrap(proc, url, log_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BackendError(
                    f"{name} exited with code {proc.returncode} before answering on {url}: {server.log()[-2000:]}"
                )
            if http_ok(url + probe):
                return server
            time.sleep(0.25)
    except BaseException:  # Ctrl-C while waiting must not leave the server and its workers behind
        server.stop()
        raise
    server.stop()
    raise BackendError(
        f"{name} did not answer on {url} within {timeout:.0f} s; its output: {server.log()[-2000:]}"
    )
