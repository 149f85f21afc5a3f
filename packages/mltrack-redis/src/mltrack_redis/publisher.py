"""The publisher: a bounded buffer and a thread of its own between the hooks and Redis.

Hooks run in mltrack's flusher thread; they only append to a buffer here and return, so a
slow or dead broker never slows the flusher, let alone training. The publisher thread sends
what is buffered in one pipeline per round and beats each open run's heartbeat. When Redis is
unreachable, the buffer holds what is waiting up to its bound, then drops the newest metric
and state events (a run's start and end are always kept) and counts them; the thread retries
with backoff and reconnects by itself, and each heartbeat rewrites the run's whole session
state, so a restarted (empty) Redis is whole again within a second.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mltrack.models import ExperimentRun, ExperimentStatus, MetricBatch, ModelArtifact
from mltrack_redis import protocol as p

__all__ = ["Publisher", "PublisherStats", "safe_url"]

log = logging.getLogger("mltrack.redis")

MAX_POINTS_PER_ENTRY = 2_000
"""Metric points per stream entry: a flush of 50,000 points becomes 25 entries, none huge."""
MAX_OPS_PER_ROUND = 500
"""Buffered events sent in one pipeline."""
ALWAYS_KEPT = frozenset({"started", "finished"})


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and health details."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


@attrs.define
class PublisherStats:
    """What the publisher did, for ``health_check()``: drops are counted, never hidden."""

    published_events: int = 0
    published_points: int = 0
    dropped_events: int = 0
    dropped_points: int = 0
    send_errors: int = 0
    reconnects: int = 0
    connected: bool | None = None
    """None until the first send; then whether the last one reached Redis."""
    last_error: str | None = None


@attrs.define
class _RunState:
    """What the publisher knows of one open run: its hash, rewritten by every heartbeat."""

    fields: dict[str, str]
    state: dict[str, Any] = attrs.field(factory=dict)
    metrics: dict[str, list[Any]] = attrs.field(factory=dict)
    last_activity: float = attrs.field(factory=time.monotonic)


class Publisher:
    """Publishes runs to the Redis at ``url``; ``submit`` is called from the hooks."""

    def __init__(
        self,
        url: str,
        *,
        stall_after: float,
        dead_after: float,
        max_buffered_points: int = 500_000,
        max_buffered_events: int = 20_000,
        stream_maxlen: int = p.STREAM_MAXLEN,
    ) -> None:
        self.url = url
        self.stats = PublisherStats()
        self._stall_ms = max(1, int(stall_after * 1000))
        self._dead_ms = max(1, int(dead_after * 1000))
        self._heartbeat = min(1.0, dead_after / 3)
        self._max_points = max_buffered_points
        self._max_events = max_buffered_events
        self._maxlen = stream_maxlen
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),  # this thread retries, with its own backoff
        )
        self._cond = threading.Condition()
        self._buffer: deque[tuple[str, str, Any, int]] = deque()
        self._buffered_points = 0
        self._submitted = 0
        self._settled = 0  # events sent or dropped
        self._runs: dict[str, _RunState] = {}
        self._host = socket.gethostname()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="mltrack-redis-publisher", daemon=True)
        self._thread.start()

    # --- called by the hooks (mltrack's flusher thread) ----------------------------------

    def submit(self, kind: str, run_id: str, payload: Any, points: int = 0) -> None:
        """Buffer one event and return at once; drop it (counted) when the buffer is full."""
        with self._cond:
            full = len(self._buffer) >= self._max_events or self._buffered_points + points > self._max_points
            if full and kind not in ALWAYS_KEPT:
                self.stats.dropped_events += 1
                self.stats.dropped_points += points
                return
            self._buffer.append((kind, run_id, payload, points))
            self._buffered_points += points
            self._submitted += 1
            self._cond.notify()

    def wait_sent(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything submitted was sent (or dropped).

        Returns at once while Redis is unreachable: a run's end must not wait for the broker.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._settled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stats.connected is False or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    @property
    def buffered(self) -> int:
        """Events waiting to be sent."""
        return len(self._buffer)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds), stop the thread, close the connection."""
        self.wait_sent(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        self._client.close()

    # --- the publisher thread ---------------------------------------------------------------

    def _serve(self) -> None:
        backoff = 0.0
        retry_at = 0.0  # after a failed send: not before this
        next_beat = 0.0
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    now = time.monotonic()
                    if retry_at > now:
                        self._cond.wait(retry_at - now)
                    elif self._buffer or now >= next_beat:
                        break
                    else:
                        self._cond.wait(next_beat - now)
                batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), MAX_OPS_PER_ROUND))]
            beat = time.monotonic() >= next_beat
            try:
                self._send(batch, beat)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                with self._cond:
                    self._buffer.extendleft(reversed(batch))  # kept, in order, for the next try
                    if self.stats.connected is not False:
                        log.warning(
                            "mltrack-redis: %s unreachable (%s); buffering, then dropping",
                            safe_url(self.url),
                            exc,
                        )
                    self.stats.connected = False
                    self.stats.send_errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self._trim()
                    self._cond.notify_all()
                backoff = min(max(backoff * 2, 0.1), 2.0)
                retry_at = time.monotonic() + backoff
                continue
            except (
                Exception
            ) as exc:  # refused by the server (out of memory, ...), or unencodable: not retried
                with self._cond:
                    self.stats.dropped_events += len(batch)
                    self.stats.dropped_points += sum(op[3] for op in batch)
                    self.stats.send_errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "mltrack-redis: %d event(s) not published: %s: %s", len(batch), type(exc).__name__, exc
                )
            else:
                with self._cond:
                    if self.stats.connected is False:
                        self.stats.reconnects += 1
                        log.warning("mltrack-redis: %s reachable again", safe_url(self.url))
                    self.stats.connected = True
                    self.stats.published_events += len(batch)
                    self.stats.published_points += sum(op[3] for op in batch)
            with self._cond:
                self._buffered_points -= sum(op[3] for op in batch)
                self._settled += len(batch)
                self._cond.notify_all()
            backoff = 0.0
            if beat:
                next_beat = time.monotonic() + self._heartbeat

    def _trim(self) -> None:
        """While Redis is down: keep the buffer within its bounds, dropping the newest droppable events."""
        kept: deque[tuple[str, str, Any, int]] = deque()
        points = 0
        for op in self._buffer:
            fits = len(kept) < self._max_events and points + op[3] <= self._max_points
            if fits or op[0] in ALWAYS_KEPT:
                kept.append(op)
                points += op[3]
            else:
                self._count_dropped([op])
        self._buffer = kept

    def _count_dropped(self, ops: list[tuple[str, str, Any, int]]) -> None:
        for op in ops:
            self.stats.dropped_events += 1
            self.stats.dropped_points += op[3]
            self._buffered_points -= op[3]
            self._settled += 1

    def _send(self, batch: list[tuple[str, str, Any, int]], beat: bool) -> None:
        pipe = self._client.pipeline(transaction=False)
        for kind, run_id, payload, _points in batch:
            getattr(self, f"_on_{kind}")(pipe, run_id, payload)
        if beat:
            self._beat(pipe)
        if len(pipe):
            pipe.execute()

    def _xadd(
        self, pipe: Any, run_id: str, kind: str, data: Mapping[str, Any], *, event: bool = False
    ) -> None:
        fields = p.encode_entry(kind, run_id, data)
        pipe.xadd(p.stream_key(run_id), fields, maxlen=self._maxlen, approximate=True)
        if event:
            pipe.xadd(p.EVENTS, fields, maxlen=p.EVENTS_MAXLEN, approximate=True)

    def _touch(self, pipe: Any, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            run.last_activity = time.monotonic()
            pipe.set(p.active_key(run_id), "1", px=self._stall_ms)

    def _write_state(self, pipe: Any, run_id: str, run: _RunState) -> None:
        fields = dict(run.fields)
        fields["state"] = p.dumps(run.state)
        fields["metrics"] = p.dumps(run.metrics)
        fields["heartbeat"] = repr(time.time())
        key = p.state_key(run_id)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, p.STATE_TTL)
        pipe.set(p.alive_key(run_id), "1", px=self._dead_ms)
        pipe.zadd(p.RUNS, {run_id: time.time()})
        pipe.expire(p.stream_key(run_id), p.STREAM_TTL)

    def _beat(self, pipe: Any) -> None:
        now = time.monotonic()
        for run_id, run in self._runs.items():
            self._write_state(pipe, run_id, run)
            left_ms = self._stall_ms - int((now - run.last_activity) * 1000)
            if left_ms > 0:  # restores the key after a restart of Redis, without extending it
                pipe.set(p.active_key(run_id), "1", px=left_ms)

    # --- one method per event kind ----------------------------------------------------------

    def _on_started(self, pipe: Any, run_id: str, run: ExperimentRun) -> None:
        start = run.start_time.isoformat() if isinstance(run.start_time, datetime) else None
        fields = {
            "run_id": run_id,
            "experiment": run.experiment_name,
            "name": run.name or "",
            "status": p.RUNNING,
            "started": start or "",
            "host": self._host,
            "pid": str(os.getpid()),
        }
        state = self._runs[run_id] = _RunState(fields)
        data = {
            "experiment": run.experiment_name,
            "name": run.name,
            "config": run.config,
            "tags": list(run.tags),
            "start_time": start,
            "host": self._host,
            "pid": os.getpid(),
        }
        self._xadd(pipe, run_id, "started", data, event=True)
        self._write_state(pipe, run_id, state)
        pipe.set(p.active_key(run_id), "1", px=self._stall_ms)
        pipe.delete(p.announce_key(run_id, p.CRASHED), p.announce_key(run_id, p.STALLED))

    def _on_metrics(self, pipe: Any, run_id: str, batch: MetricBatch) -> None:
        rows = p.metric_points(list(batch.groups()))
        for i in range(0, len(rows), MAX_POINTS_PER_ENTRY):
            self._xadd(pipe, run_id, "metrics", {"points": rows[i : i + MAX_POINTS_PER_ENTRY]})
        run = self._runs.get(run_id)
        if run is not None:
            for name, step, value, _ts, context in rows:
                key = name if not context else f"{name}{p.dumps(context)}"
                last = run.metrics.get(key)
                if last is None or step >= last[0]:
                    run.metrics[key] = [step, value]
            pipe.hset(p.state_key(run_id), "metrics", p.dumps(run.metrics))
        self._touch(pipe, run_id)

    def _on_state(self, pipe: Any, run_id: str, values: Mapping[str, Any]) -> None:
        self._xadd(pipe, run_id, "state", values)
        run = self._runs.get(run_id)
        if run is not None:
            run.state.update(values)
            pipe.hset(p.state_key(run_id), "state", p.dumps(run.state))
        self._touch(pipe, run_id)

    def _on_params(self, pipe: Any, run_id: str, params: Mapping[str, Any]) -> None:
        self._xadd(pipe, run_id, "params", {"params": dict(params)})

    def _on_tags(self, pipe: Any, run_id: str, tags: list[str]) -> None:
        self._xadd(pipe, run_id, "tags", {"tags": list(tags)})

    def _on_artifact(self, pipe: Any, run_id: str, artifact: ModelArtifact) -> None:
        data = {
            "name": artifact.name,
            "type": artifact.artifact_type.value,
            "size": artifact.size,
            "sha256": artifact.sha256,
            "metadata": dict(artifact.metadata),
        }
        self._xadd(pipe, run_id, "artifact", data)

    def _on_finished(
        self, pipe: Any, run_id: str, payload: tuple[ExperimentStatus, datetime, Mapping[str, float]]
    ) -> None:
        status, end_time, finals = payload
        data = {"status": status.value, "end_time": end_time.isoformat(), "final_metrics": dict(finals)}
        self._xadd(pipe, run_id, "finished", data, event=True)
        run = self._runs.pop(run_id, None)
        key = p.state_key(run_id)
        fields = {"status": status.value, "ended": end_time.isoformat(), "heartbeat": repr(time.time())}
        if run is not None:
            fields = {**run.fields, "state": p.dumps(run.state), "metrics": p.dumps(run.metrics), **fields}
        pipe.hset(key, mapping=fields)
        pipe.expire(key, p.FINISHED_TTL)
        pipe.delete(p.alive_key(run_id), p.active_key(run_id))
        pipe.expire(p.stream_key(run_id), p.STREAM_TTL)

    def _on_deleted(self, pipe: Any, run_id: str, _payload: None) -> None:
        self._runs.pop(run_id, None)
        pipe.delete(p.state_key(run_id), p.stream_key(run_id), p.alive_key(run_id), p.active_key(run_id))
        pipe.zrem(p.RUNS, run_id)
