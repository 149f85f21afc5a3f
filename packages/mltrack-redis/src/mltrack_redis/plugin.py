"""The mltrack plugin of mltrack-redis, found through the ``mltrack`` entry-point group.

An observer, not a backend: with ``MLTRACK_REDIS_URL`` set, every run of this process is
published live to that Redis (see :mod:`mltrack_redis.protocol`); unset, each hook returns at
once. Hooks run in mltrack's flusher thread and only hand their arguments to a bounded buffer;
a publisher process of its own (started with the first run) encodes and sends them. It also adds ``mltrack watch``. Nothing heavy is imported until a run is published or
the command runs, so loading mltrack's plugins stays cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mltrack.hookspecs import hookimpl
from mltrack.models import ExperimentRun, ExperimentStatus, HealthStatus, MetricBatch, ModelArtifact
from mltrack.settings import env

if TYPE_CHECKING:
    import click

    from mltrack_redis.publisher import PublisherProcess

__all__ = ["current_publisher", "reset_publisher"]

FINISH_WAIT = 2.0
"""Seconds a run's end waits for its ``finished`` event to reach Redis (never while Redis is down)."""

MAX_BUFFERED_EVENTS = 20_000
"""Events held while Redis is slow or down (each side of the publisher process) before new ones are dropped."""
MAX_BUFFERED_POINTS = 500_000
"""Metric points held likewise: a bound on memory, whatever the flush size."""

_lock = threading.Lock()
_publisher: PublisherProcess | None = None


def current_publisher(create: bool = False) -> PublisherProcess | None:
    """The publisher for ``MLTRACK_REDIS_URL`` (created when ``create`` and the URL is set), else None.

    The URL is read when a run starts, so a change of the variable takes effect with the next run.
    """
    global _publisher
    if not create:
        return _publisher
    url = env("MLTRACK_REDIS_URL")
    with _lock:
        if _publisher is not None and (not url or _publisher.url != url or not _publisher.alive):
            _publisher.close(timeout=0.5)
            _publisher = None
        if url and _publisher is None:
            from mltrack_redis.publisher import PublisherProcess

            _publisher = PublisherProcess(
                url,
                stall_after=env("MLTRACK_REDIS_STALL_AFTER"),
                dead_after=env("MLTRACK_REDIS_DEAD_AFTER"),
                max_buffered_events=MAX_BUFFERED_EVENTS,
                max_buffered_points=MAX_BUFFERED_POINTS,
            )
        return _publisher


def reset_publisher() -> None:
    """Send what is buffered (briefly), then drop the publisher; the next run starts a new one."""
    global _publisher
    with _lock:
        publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close(timeout=1.0)


@hookimpl
def mltrack_create_run(run: ExperimentRun) -> None:
    """Publish the run's start and begin its heartbeat."""
    publisher = current_publisher(create=True)
    if publisher is not None:
        publisher.submit("started", run.id, run)


@hookimpl
def mltrack_log_metrics(run_id: str, batch: MetricBatch) -> None:
    """Publish a flush's points (a stream entry per 5,000 at most)."""
    if _publisher is not None:
        _publisher.submit("metrics", run_id, batch, len(batch))


@hookimpl
def mltrack_set_state(run_id: str, values: Mapping[str, Any]) -> None:
    """Publish session state (phase, progress, ETA, the user's keys)."""
    if _publisher is not None:
        _publisher.submit("state", run_id, dict(values))


@hookimpl
def mltrack_log_params(run_id: str, params: Mapping[str, Any]) -> None:
    """Publish parameters added to the run's config."""
    if _publisher is not None:
        _publisher.submit("params", run_id, dict(params))


@hookimpl
def mltrack_set_tags(run_id: str, tags: Sequence[str]) -> None:
    """Publish tags added to the run."""
    if _publisher is not None:
        _publisher.submit("tags", run_id, list(tags))


@hookimpl
def mltrack_log_artifact(run_id: str, artifact: ModelArtifact) -> None:
    """Publish an artifact's name, type, size and checksum (never the file)."""
    if _publisher is not None:
        _publisher.submit("artifact", run_id, artifact)


@hookimpl
def mltrack_finish_run(
    run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
) -> None:
    """Publish the run's end, and wait briefly until it is out (so a process ending next loses nothing)."""
    publisher = _publisher
    if publisher is not None:
        publisher.submit("finished", run_id, (status, end_time, dict(final_metrics)))
        publisher.wait_sent(FINISH_WAIT)


@hookimpl
def mltrack_delete_run(run_id: str) -> None:
    """Remove a deleted run's live keys."""
    if _publisher is not None:
        _publisher.submit("deleted", run_id, None)


@hookimpl
def mltrack_health() -> HealthStatus:
    """Whether live publishing works: counts of events published and dropped, the broker's reachability."""
    publisher = _publisher
    if publisher is None:
        on = bool(env("MLTRACK_REDIS_URL"))
        return HealthStatus(True, (), backend="redis", details={"enabled": on, "publishing": False})
    from mltrack_redis.publisher import safe_url

    stats = publisher.stats
    details = {
        "enabled": True,
        "url": safe_url(publisher.url),
        "connected": stats.connected,
        "published_events": stats.published_events,
        "published_points": stats.published_points,
        "dropped_events": stats.dropped_events,
        "dropped_points": stats.dropped_points,
        "buffered_events": publisher.buffered,
        "reconnects": stats.reconnects,
        "last_error": stats.last_error,
    }
    if stats.connected is False:
        issue = (
            f"Redis at {safe_url(publisher.url)} is unreachable ({stats.last_error}): live monitoring "
            f"is buffering and has dropped {stats.dropped_events} event(s) ({stats.dropped_points} points); "
            "training and the store are unaffected. Start Redis or fix MLTRACK_REDIS_URL."
        )
        return HealthStatus(False, (issue,), backend="redis", details=details)
    return HealthStatus(True, (), backend="redis", details=details)


@hookimpl
def mltrack_register_commands(cli: click.Group) -> None:
    """Add ``mltrack watch``."""
    from mltrack_redis.watch import watch

    cli.add_command(watch)
