"""Follow runs as they happen, from any program: ``async for event in subscribe(experiment="ppo"): ...``.

Reads the streams mltrack-redis publishes (see :mod:`mltrack_redis.protocol`) with ``XREAD
BLOCK``, so events arrive within milliseconds of the training process's flush; a late
subscriber first replays what the capped stream still holds. Whoever subscribes also watches
the runs it follows: a run whose heartbeat lapsed is announced ``crashed``, one that stopped
making progress ``stalled`` (once, by the first watcher to notice: every subscriber then sees
the same event). A broker that goes away is waited for: the subscription resumes where it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from mltrack.errors import ConfigurationError
from mltrack.settings import env
from mltrack_redis import protocol as p
from mltrack_redis.protocol import LiveEvent

__all__ = ["LiveEvent", "announce_flag", "connect", "subscribe"]

log = logging.getLogger("mltrack.redis")

FORGET_AFTER = 30.0
"""Seconds a followed run's state may be missing before an experiment's subscription stops checking it."""
ANNOUNCE_TTL = {p.CRASHED: 3600, p.STALLED: 600}
"""Seconds one announcement of a run's flag blocks the next one (a stall may be announced again later)."""


def resolve_url(url: str | None) -> str:
    """``url``, else ``MLTRACK_REDIS_URL``; a :class:`ConfigurationError` with the fix when neither is set."""
    found = url or env("MLTRACK_REDIS_URL")
    if not found:
        raise ConfigurationError(
            "no Redis to follow runs on: set MLTRACK_REDIS_URL (e.g. redis://localhost:6379/0), "
            "the same as the training processes use, or pass url= (mltrack watch --url)"
        )
    return str(found)


def connect(url: str | None = None) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (default ``MLTRACK_REDIS_URL``) that answers text."""
    return aioredis.Redis.from_url(
        resolve_url(url), decode_responses=True, socket_timeout=5.0, socket_connect_timeout=2.0
    )


def flag_event(run_id: str, what: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The stream entry announcing ``what`` (crashed, stalled) for a run whose hash holds ``fields``."""
    reason = "heartbeat lapsed" if what == p.CRASHED else "no metric or state for a while"
    data = {"reason": reason, "host": fields.get("host"), "pid": fields.get("pid"), "at": time.time()}
    return p.encode_entry(what, run_id, data)


async def announce_flag(client: aioredis.Redis, run_id: str, what: str, fields: Mapping[str, str]) -> bool:
    """Announce ``what`` for the run unless someone did already; True if this call did."""
    first = await client.set(p.announce_key(run_id, what), "1", nx=True, ex=ANNOUNCE_TTL[what])
    if not first:
        return False
    entry = flag_event(run_id, what, fields)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(p.stream_key(run_id), entry, maxlen=p.STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
    pipe.xadd(p.EVENTS, entry, maxlen=p.EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
    if what == p.CRASHED:
        pipe.hset(p.state_key(run_id), "status", p.CRASHED)
    await pipe.execute()
    return True


async def _check_runs(client: aioredis.Redis, run_ids: list[str]) -> list[str]:
    """Announce each followed run that crashed or stalled; answer the runs whose state is gone (expired)."""
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hgetall(p.state_key(run_id))
        pipe.exists(p.alive_key(run_id))
        pipe.exists(p.active_key(run_id))
    answers = await pipe.execute()
    gone = []
    for i, run_id in enumerate(run_ids):
        fields, alive, active = answers[3 * i : 3 * i + 3]
        if not fields:
            gone.append(run_id)
            continue
        what = p.flag(fields.get("status"), bool(alive), bool(active))
        if what is not None:
            await announce_flag(client, run_id, what, fields)
    return gone


async def _running_runs(client: aioredis.Redis, experiment: str | None) -> list[str]:
    """Runs with a live session-state hash (of ``experiment``, when given), oldest heartbeat first."""
    ids = [str(i) for i in await client.zrangebyscore(p.RUNS, time.time() - p.STATE_TTL, "+inf")]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(p.state_key(run_id), ["experiment", "status"])
    found = []
    for run_id, (exp, status) in zip(ids, await pipe.execute()):
        if status is not None and (experiment is None or exp == experiment):
            found.append(run_id)
    return found


async def _last_id(client: aioredis.Redis, stream: str) -> str:
    last = await client.xrevrange(stream, count=1)
    return str(last[0][0]) if last else "0-0"


async def subscribe(
    experiment: str | None = None,
    run: str | None = None,
    *,
    url: str | None = None,
    replay: bool = True,
    check_every: float = 1.0,
) -> AsyncIterator[LiveEvent]:
    """Yield the events of one run (``run=``), or of every run of ``experiment`` (or of all runs).

    Events of one run arrive in the order they happened: ``started``, then ``metrics``,
    ``state``, ``params``, ``tags``, ``artifact`` as logged, then ``finished`` (with its status)
    or ``crashed``. With ``replay`` a run is read from the oldest entry its capped stream still
    holds (a run that started earlier shows its recent past first); without, from now on.
    Following one run ends after its final event; following an experiment goes on until the
    caller stops. ``url`` defaults to ``MLTRACK_REDIS_URL``. Every ``check_every`` seconds the
    followed runs are checked for a lapsed heartbeat (``crashed``) or a stall (``stalled``).
    """
    client = connect(url)
    positions: dict[str, str] = {}  # stream key -> last id read
    open_runs: set[str] = set()
    misses: dict[str, int] = {}  # run id -> checks in a row that found no state
    discovered = False
    backoff = 0.0
    last_check = 0.0

    def follow(run_id: str, start: str) -> None:
        key = p.stream_key(run_id)
        if key not in positions:
            positions[key] = start
            open_runs.add(run_id)

    try:
        while True:
            try:
                if not discovered:
                    if run is not None:
                        follow(run, "0-0" if replay else await _last_id(client, p.stream_key(run)))
                    else:
                        positions.setdefault(p.EVENTS, await _last_id(client, p.EVENTS))
                        for run_id in await _running_runs(client, experiment):
                            start = "0-0" if replay else await _last_id(client, p.stream_key(run_id))
                            follow(run_id, start)
                    discovered = True
                now = time.monotonic()
                if open_runs and now - last_check >= check_every:
                    last_check = now
                    gone = await _check_runs(client, sorted(open_runs))
                    for run_id in open_runs - set(gone):
                        misses.pop(run_id, None)
                    for run_id in (
                        gone
                    ):  # state expired: stop asking (not at once: a restarted Redis is empty a moment)
                        misses[run_id] = misses.get(run_id, 0) + 1
                        if run is None and misses[run_id] * check_every >= FORGET_AFTER:
                            open_runs.discard(run_id)
                block = max(1, int(min(check_every, 1.0) * 1000))
                answer: Any = await client.xread(positions, count=1000, block=block)  # type: ignore[arg-type]
                backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                backoff = min(max(backoff * 2, 0.1), 2.0)
                log.warning("mltrack-redis: subscription waiting for Redis (%s)", exc)
                await asyncio.sleep(backoff)
                continue
            for stream, entries in answer or ():
                for entry_id, fields in entries:
                    positions[stream] = entry_id
                    event = p.decode_entry(entry_id, fields)
                    if event is None:
                        continue
                    if stream == p.EVENTS:  # discovery of new runs only; their own stream has the events
                        if event.type == "started" and (
                            experiment is None or event.data.get("experiment") == experiment
                        ):
                            follow(event.run_id, "0-0")
                        continue
                    if (
                        event.type == "started"
                        and experiment is not None
                        and run is None
                        and event.data.get("experiment") != experiment
                    ):
                        continue
                    if event.is_final:
                        open_runs.discard(event.run_id)
                    yield event
                    if event.is_final:
                        if run is not None:
                            return
                        positions.pop(stream, None)  # nothing more will come
    finally:
        await client.aclose()
