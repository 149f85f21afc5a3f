"""What mltrack-redis writes to Redis, shared by the publisher, the subscriber and ``mltrack watch``.

Per run ``<id>``, under the prefix ``mltrack:``:

* ``run:<id>:stream``: a Stream capped at about ``STREAM_MAXLEN`` entries (``XADD MAXLEN ~``)
  of everything the run does, in order: ``started``, ``metrics`` (one entry per flush),
  ``params``, ``tags``, ``artifact``, ``state``, ``finished``, and ``crashed`` / ``stalled``
  announced by whoever watches first. Each entry has the fields ``type``, ``run`` and ``data``
  (JSON), so a late subscriber replays the recent past.
* ``run:<id>``: the session-state hash (run info, status, phase, progress, ETA, the user's
  keys as JSON), expiring ``STATE_TTL`` seconds after the last heartbeat.
* ``run:<id>:alive``: set by every heartbeat to expire after ``MLTRACK_REDIS_DEAD_AFTER``:
  gone while the hash says running means the training process died (crashed).
* ``run:<id>:active``: set by every metric or state write to expire after
  ``MLTRACK_REDIS_STALL_AFTER``: gone while alive means the run stopped making progress.

and ``runs`` (a sorted set of run ids by last heartbeat, to list the runs) and ``events`` (a
capped Stream of every run's ``started``, ``finished``, ``crashed`` and ``stalled``). Only
JSON is written and read: nothing received from Redis is unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs

from mltrack.models import MetricPoint

__all__ = [
    "EVENTS",
    "FINAL",
    "PREFIX",
    "RUNS",
    "LiveEvent",
    "active_key",
    "alive_key",
    "announce_key",
    "decode_entry",
    "encode_entry",
    "flag",
    "metric_entries",
    "state_key",
    "stream_key",
]

PREFIX = "mltrack:"
RUNS = PREFIX + "runs"
EVENTS = PREFIX + "events"
STREAM_MAXLEN = 10_000
"""Entries kept per run stream (about: Redis trims whole nodes, ``MAXLEN ~``)."""
EVENTS_MAXLEN = 10_000
STATE_TTL = 600
"""Seconds a run's session-state hash outlives its last heartbeat (so a crashed run stays listed a while)."""
FINISHED_TTL = 300
"""Seconds a finished run's hash stays, so ``mltrack watch`` shows how it ended."""
STREAM_TTL = 86_400
"""Seconds a run's stream stays after its last write: replayable for a day, then gone."""
FINAL = frozenset({"finished", "crashed"})
"""Event types after which a run publishes nothing more."""

RUNNING = "running"
CRASHED = "crashed"
STALLED = "stalled"


def state_key(run_id: str) -> str:
    """The run's session-state hash."""
    return f"{PREFIX}run:{run_id}"


def stream_key(run_id: str) -> str:
    """The run's capped event stream."""
    return f"{PREFIX}run:{run_id}:stream"


def alive_key(run_id: str) -> str:
    """Present while the run's heartbeat is fresh."""
    return f"{PREFIX}run:{run_id}:alive"


def active_key(run_id: str) -> str:
    """Present while the run made progress lately."""
    return f"{PREFIX}run:{run_id}:active"


def announce_key(run_id: str, what: str) -> str:
    """Set (NX) by the one watcher that announces ``what`` (crashed, stalled) for the run."""
    return f"{PREFIX}run:{run_id}:announced:{what}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def dumps(value: Any) -> str:
    """Strict JSON (NaN and infinities become null), readable by any language."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_clean(value), allow_nan=False, separators=(",", ":"))


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode_entry(kind: str, run_id: str, data: Mapping[str, Any]) -> dict[str, str]:
    """The fields of one stream entry."""
    return {"type": kind, "run": run_id, "data": dumps(data)}


@attrs.frozen
class LiveEvent:
    """One thing a run did, as a subscriber receives it.

    ``type`` is ``started``, ``metrics``, ``params``, ``tags``, ``artifact``, ``state``,
    ``finished``, ``crashed`` or ``stalled``; ``data`` is its JSON payload (``metrics``:
    ``{"points": [[name, step, value, timestamp, context], ...]}``; ``state``: the values
    set; ``finished``: ``status``, ``end_time``, ``final_metrics``). ``id`` is the Redis
    stream id: ``subscribe(..., after=event.id)`` resumes after it.
    """

    type: str
    run_id: str
    data: Mapping[str, Any]
    id: str = ""

    @property
    def points(self) -> list[MetricPoint]:
        """The metric points of a ``metrics`` event (empty for the others)."""
        out = []
        for series in self.data.get("series", ()):
            context = series.get("context") or {}
            for step, value, ts in zip(series["steps"], series["values"], series["timestamps"]):
                out.append(
                    MetricPoint(
                        name=series["name"],
                        value=math.nan if value is None else float(value),
                        step=int(step),
                        timestamp=None if ts is None else datetime.fromtimestamp(ts, timezone.utc),
                        context=context,
                    )
                )
        return out

    @property
    def is_final(self) -> bool:
        """True for ``finished`` and ``crashed``: the run publishes nothing more."""
        return self.type in FINAL


def decode_entry(entry_id: str, fields: Mapping[str, str]) -> LiveEvent | None:
    """The event of one stream entry; None for an entry that is not mltrack's (ignored, never guessed)."""
    kind = fields.get("type")
    run_id = fields.get("run")
    raw = fields.get("data", "{}")
    if not kind or not run_id:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return LiveEvent(kind, run_id, data, entry_id)


def metric_entries(
    groups: Sequence[tuple[str, Mapping[str, Any], Sequence[int], Sequence[float], Sequence[float]]],
    max_points: int,
) -> list[list[dict[str, Any]]]:
    """A flush's metric groups as stream-entry payloads of at most ``max_points`` points each.

    Columns, not rows (``{"name", "context", "steps", "values", "timestamps"}`` per metric):
    encoding them costs the publisher thread a fraction of what a row per point does, which
    matters because that thread shares the interpreter lock with the training loop.
    """
    entries: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for name, context, steps, values, times in groups:
        steps, values, times = list(steps), list(values), list(times)
        for i in range(0, len(steps), max_points):
            n = len(steps[i : i + max_points])
            if current and size + n > max_points:
                entries.append(current)
                current, size = [], 0
            current.append(
                {
                    "name": name,
                    "context": dict(context),
                    "steps": steps[i : i + max_points],
                    "values": values[i : i + max_points],
                    "timestamps": times[i : i + max_points],
                }
            )
            size += n
    if current:
        entries.append(current)
    return entries


def flag(status: str | None, alive: bool, active: bool) -> str | None:
    """``crashed`` or ``stalled`` for a run whose hash says ``status``, or None when it is fine.

    Crashed: the hash says running and the heartbeat lapsed (the process is gone, wherever it
    ran). Stalled: alive, but no metric or state for ``MLTRACK_REDIS_STALL_AFTER``.
    """
    if status != RUNNING:
        return None
    if not alive:
        return CRASHED
    if not active:
        return STALLED
    return None
