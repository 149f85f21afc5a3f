"""Follow runs as they happen from another program: ``async for event in mltrack.live.subscribe(...)``.

Live monitoring is a plugin's work (mltrack-redis publishes runs to Redis when training runs
with ``MLTRACK_REDIS_URL`` set); this module hands the call to it, imported on first use, so
core never imports a broker's client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import import_module
from typing import Any

from mltrack.errors import PluginLoadError

__all__ = ["subscribe"]


def subscribe(
    experiment: str | None = None,
    run: str | None = None,
    *,
    url: str | None = None,
    replay: bool = True,
    check_every: float = 1.0,
) -> AsyncIterator[Any]:
    """The events of one run, or of every run of ``experiment`` (see ``mltrack_redis.live.subscribe``).

    Raises :class:`PluginLoadError` naming the package to install when mltrack-redis is missing.
    """
    try:
        live = import_module("mltrack_redis.live")
    except ModuleNotFoundError as exc:
        raise PluginLoadError(
            "live monitoring needs the mltrack-redis plugin: pip install mltrack-redis, "
            "and set MLTRACK_REDIS_URL in the training processes"
        ) from exc
    events: AsyncIterator[Any] = live.subscribe(
        experiment, run, url=url, replay=replay, check_every=check_every
    )
    return events
