"""Helpers of the live-monitoring tests: collect a subscription's events with a deadline."""

from __future__ import annotations

import asyncio
from typing import Any

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
) -> list[LiveEvent]:
    """Events of a subscription until ``until(event)`` is true (default: the run's final event) or ``timeout``."""
    events: list[LiveEvent] = []
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
