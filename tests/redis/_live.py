"""Helpers of the live-monitoring tests: a real redis-server, and a subscription's events with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from mltrack.servers import ServerProcess, free_port
from mltrack_redis.live import subscribe
from mltrack_redis.protocol import LiveEvent


def collect(
    url: str,
    *,
    run: str | None = None,
    experiment: str | None = None,
    until: Any = None,
    timeout: float = 30.0,
    replay: bool = True,
    check_every: float = 0.5,
    into: list[LiveEvent] | None = None,
) -> list[LiveEvent]:
    """Events of a subscription until ``until(event)`` is true (default: the run's final event) or ``timeout``.

    ``into``: a list the events are appended to as they arrive (for a caller watching from another thread).
    """
    events: list[LiveEvent] = [] if into is None else into
    stop = until or (lambda event: event.is_final)

    async def main() -> None:
        async for event in subscribe(experiment, run, url=url, replay=replay, check_every=check_every):
            events.append(event)
            if stop(event):
                return

    try:
        asyncio.run(asyncio.wait_for(main(), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        pass
    return events


INSTALL_HINT = "install it: apt-get install -y redis-server (.ci/run does)"


class RedisServer:
    """A redis-server on 127.0.0.1 that a test can kill (SIGKILL) and start again on the same port."""

    def __init__(self, root: Path, password: str | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
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
        if self.password:
            argv += ["--requirepass", self.password]
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
