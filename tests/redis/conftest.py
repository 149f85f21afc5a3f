"""Fixtures for live monitoring: a real ``redis-server`` per test on a free loopback port.

No persistence (``--save '' --appendonly no``), its own process group led by mltrack's guard,
stopped by PID when the test ends, failed or not (and by the guard if pytest itself dies).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.servers import ServerProcess, free_port

INSTALL_HINT = "install it: apt-get install -y redis-server (.ci/run does)"


class RedisServer:
    """A redis-server on 127.0.0.1 that a test can kill (SIGKILL) and start again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: ServerProcess | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start it and return once it answers PING."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(f"redis-server is not installed; {INSTALL_HINT}")
        fd, log_name = tempfile.mkstemp(prefix="mltrack-redis-", suffix=".log")
        os.close(fd)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.root), "--protected-mode", "no"]
        with open(log_name, "wb") as log_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mltrack._guard", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.process = ServerProcess(proc, self.url, Path(log_name))
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.process.log()[-2000:]}")
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, OSError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.url}: {self.process.log()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the server (and its guard): what a crashed or rebooted broker looks like."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.proc.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop it and everything in its group: SIGKILL, as a Redis that persists nothing has nothing to save
        (SIGTERM costs 0.6 s or more of waiting for Redis's shutdown)."""
        if self.process is not None:
            self.kill()

    def client(self) -> object:
        """A redis-py client answering text."""
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis of this test's own."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        from mltrack_redis.plugin import reset_publisher

        reset_publisher()  # while Redis still answers: nothing waits for a broker that is gone
        server.stop()


@pytest.fixture(autouse=True)
def _drop_publisher() -> Iterator[None]:
    """Each test starts without the previous test's publisher (its Redis is gone)."""
    yield
    from mltrack_redis.plugin import reset_publisher

    reset_publisher()
