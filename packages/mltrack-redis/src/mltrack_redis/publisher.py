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

import json
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

__all__ = ["Publisher", "PublisherProcess", "PublisherStats", "safe_url"]

log = logging.getLogger("mltrack.redis")

MAX_POINTS_PER_ENTRY = 5_000
"""Metric points per stream entry at most: a flush of 50,000 points becomes 10 entries, none huge."""
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
        pid: int | None = None,
    ) -> None:
        self.url = url
        self._pid = os.getpid() if pid is None else pid
        """The training process's id, published with each run (this may be a publisher process)."""
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
        if self._runs:  # the index forgets runs whose streams are gone
            pipe.zremrangebyscore(p.RUNS, "-inf", time.time() - p.STREAM_TTL)
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
            "pid": str(self._pid),
        }
        state = self._runs[run_id] = _RunState(fields)
        data = {
            "experiment": run.experiment_name,
            "name": run.name,
            "config": run.config,
            "tags": list(run.tags),
            "start_time": start,
            "host": self._host,
            "pid": self._pid,
        }
        self._xadd(pipe, run_id, "started", data, event=True)
        self._write_state(pipe, run_id, state)
        pipe.set(p.active_key(run_id), "1", px=self._stall_ms)
        pipe.delete(p.announce_key(run_id, p.CRASHED), p.announce_key(run_id, p.STALLED))

    def _on_metrics(self, pipe: Any, run_id: str, batch: MetricBatch) -> None:
        entries = p.metric_entries(list(batch.groups()), MAX_POINTS_PER_ENTRY)
        for entry in entries:
            self._xadd(pipe, run_id, "metrics", {"series": entry})
        run = self._runs.get(run_id)
        if run is not None:
            for entry in entries:
                for series in entry:
                    steps = series["steps"]
                    if not steps:
                        continue
                    top = max(steps)
                    at = len(steps) - 1 - steps[::-1].index(top)  # the last value logged at the top step
                    context = series["context"]
                    key = series["name"] if not context else f"{series['name']}{p.dumps(context)}"
                    last = run.metrics.get(key)
                    if last is None or top >= last[0]:
                        run.metrics[key] = [top, series["values"][at]]
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


class PublisherProcess:
    """The training process's side of the publisher process (:mod:`mltrack_redis._process`).

    ``submit`` appends to a bounded buffer and returns; a thread pickles what is buffered into
    the publisher process's stdin, which encodes it and sends it to Redis on another core. Drops
    on either side are counted; ``stats`` adds them up.
    """

    def __init__(
        self,
        url: str,
        *,
        stall_after: float,
        dead_after: float,
        max_buffered_points: int = 500_000,
        max_buffered_events: int = 20_000,
    ) -> None:
        import subprocess
        import sys

        from mltrack_redis import _process

        self.url = url
        self._max_points = max_buffered_points
        self._max_events = max_buffered_events
        self._own = PublisherStats()  # what this side dropped
        self._remote: dict[str, Any] = {}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mltrack_redis._process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Out of the terminal's process group: Ctrl-C interrupts training, which then finishes
            # its runs INTERRUPTED; the publisher must live on to publish that (it ends at EOF).
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        self._stdin = self._proc.stdin
        self._send = _process.send
        self._send(
            self._stdin,
            (
                "config",
                {
                    "url": url,
                    "stall_after": stall_after,
                    "dead_after": dead_after,
                    "max_buffered_points": max_buffered_points,
                    "max_buffered_events": max_buffered_events,
                    "pid": os.getpid(),
                },
            ),
        )
        self._cond = threading.Condition()
        self._buffer: deque[tuple[str, str, Any, int]] = deque()
        self._buffered_points = 0
        self._syncs: deque[tuple[int, float]] = deque()
        self._seq = 0
        self._acked = 0
        self._closing = False
        self.alive = True
        """False once the publisher process is gone; the next run starts a new one."""
        self._shipper = threading.Thread(target=self._ship, name="mltrack-redis-shipper", daemon=True)
        self._reader = threading.Thread(target=self._read, name="mltrack-redis-reader", daemon=True)
        self._shipper.start()
        self._reader.start()

    def submit(self, kind: str, run_id: str, payload: Any, points: int = 0) -> None:
        """Buffer one event and return at once; drop it (counted) when the buffer is full or the process gone."""
        with self._cond:
            full = len(self._buffer) >= self._max_events or self._buffered_points + points > self._max_points
            if not self.alive or (full and kind not in ALWAYS_KEPT):
                self._own.dropped_events += 1
                self._own.dropped_points += points
                return
            self._buffer.append((kind, run_id, payload, points))
            self._buffered_points += points
            self._cond.notify()

    def wait_sent(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything submitted reached Redis (or was dropped).

        Returns at once while Redis is unreachable: a run's end must not wait for the broker.
        """
        if self._remote.get("connected") is False:
            return False
        with self._cond:
            self._seq += 1
            seq = self._seq
            self._syncs.append((seq, timeout))
            self._cond.notify()
            deadline = time.monotonic() + timeout + 0.5
            while self._acked < seq and self.alive:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return self._acked >= seq

    @property
    def stats(self) -> PublisherStats:
        """Both sides' counters added up."""
        remote = self._remote
        own = self._own
        return PublisherStats(
            published_events=remote.get("published_events", 0),
            published_points=remote.get("published_points", 0),
            dropped_events=remote.get("dropped_events", 0) + own.dropped_events,
            dropped_points=remote.get("dropped_points", 0) + own.dropped_points,
            send_errors=remote.get("send_errors", 0),
            reconnects=remote.get("reconnects", 0),
            connected=remote.get("connected") if self.alive else False,
            last_error=own.last_error or remote.get("last_error"),
        )

    @property
    def buffered(self) -> int:
        """Events waiting here and in the publisher process."""
        return len(self._buffer) + int(self._remote.get("buffered_events", 0))

    def close(self, timeout: float = 2.0) -> None:
        """Send what is buffered (up to ``timeout`` seconds), then end the publisher process."""
        import subprocess

        with self._cond:
            self._closing = True
            self._cond.notify()
        self._shipper.join(timeout + 1)
        try:
            self._proc.wait(timeout + 2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(1)

    def _ship(self) -> None:
        """Pickle what is buffered into the publisher process, in order, a round at a time."""
        while True:
            with self._cond:
                while not (self._buffer or self._syncs or self._closing):
                    self._cond.wait()
                ops = list(self._buffer)
                self._buffer.clear()
                self._buffered_points = 0
                syncs = list(self._syncs)
                self._syncs.clear()
                closing = self._closing
            try:
                if ops:
                    self._send(self._stdin, ("ops", ops))
                for seq, timeout in syncs:
                    self._send(self._stdin, ("sync", seq, timeout))
                if closing:
                    self._send(self._stdin, ("close", 2.0))
                    self._stdin.close()
                    return
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._gone(f"the publisher process ended ({type(exc).__name__}: {exc})", ops)
                return

    def _read(self) -> None:
        """Take the publisher process's reports: counters, and acknowledgements of ``wait_sent``."""
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self._remote = report.get("stats") or self._remote
                if report.get("ack") is not None:
                    self._acked = max(self._acked, int(report["ack"]))
                self._cond.notify_all()
        if not self._closing:
            self._gone(f"the publisher process exited with code {self._proc.wait()}", [])

    def _gone(self, why: str, lost: list[tuple[str, str, Any, int]]) -> None:
        with self._cond:
            if self.alive:
                log.error("mltrack-redis: %s; live monitoring stops until the next run", why)
            self.alive = False
            self._own.last_error = why
            self._own.dropped_events += len(lost) + len(self._buffer)
            self._own.dropped_points += sum(op[3] for op in lost) + self._buffered_points
            self._buffer.clear()
            self._buffered_points = 0
            self._cond.notify_all()
