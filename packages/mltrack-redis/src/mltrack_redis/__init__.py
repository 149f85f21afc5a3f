"""mltrack-redis: every run published live to Redis, ``mltrack watch``, and ``subscribe`` for other programs.

Set ``MLTRACK_REDIS_URL`` in the training process and each run's events, metric points (a
capped Redis Stream per run) and session state (a hash with a heartbeat) are published as they
happen; ``async for event in mltrack_redis.subscribe(experiment="ppo")`` (also
``mltrack.live.subscribe``) follows them from any machine. Names are imported on first use, so
loading the plugin does not import redis.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltrack_redis.live import subscribe as subscribe
    from mltrack_redis.protocol import LiveEvent as LiveEvent

__all__ = ["LiveEvent", "subscribe"]

_LAZY = {"subscribe": "mltrack_redis.live", "LiveEvent": "mltrack_redis.protocol"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mltrack_redis' has no attribute {name!r}")
    return getattr(import_module(module), name)
