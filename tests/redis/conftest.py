"""Fixtures for live monitoring: a real ``redis-server`` per test on a free loopback port.

No persistence (``--save '' --appendonly no``), its own process group led by mltrack's guard,
stopped by PID when the test ends, failed or not (and by the guard if pytest itself dies).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _live import RedisServer


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
