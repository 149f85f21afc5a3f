"""The mltrack plugin of mltrack-system, found through the ``mltrack`` entry-point group.

An observer, not a backend: each run of this process is sampled (CPU, memory, disk and network
I/O, GPUs when NVML answers) every ``MLTRACK_SYSTEM_INTERVAL`` seconds until it finishes,
unless ``MLTRACK_SYSTEM_METRICS=0``. The hooks only add and remove runs; one daemon thread
samples. psutil is imported with the first run, so loading mltrack's plugins stays cheap.
"""

from __future__ import annotations

import logging
import os
import threading

from mltrack.errors import ConfigurationError
from mltrack.hookspecs import hookimpl
from mltrack.models import ExperimentRun, HealthStatus
from mltrack.settings import env
from mltrack_system.sampler import RunSink, Sampler

__all__ = ["current_sampler"]

log = logging.getLogger(__name__)
_lock = threading.Lock()
_sampler: Sampler | None = None
_config_issue = ""


def current_sampler(create: bool = False) -> Sampler | None:
    """The process's sampler (created when ``create``), else None before the first sampled run."""
    global _sampler
    with _lock:
        if _sampler is None and create:
            _sampler = Sampler()
        return _sampler


def _session_holding(run_id: str) -> RunSink | None:
    """The process-wide tracking session if it holds ``run_id``, else None.

    ``mltrack.factory.tracking_session()`` builds one when there is none, which a hook must never
    do (the conformance kit and other code build sessions of their own), so the current one is
    read, never created; a run of another session is not sampled.
    """
    from mltrack import factory

    session = factory.current_session()
    if session is None or run_id not in {run.id for run in session.open_runs}:
        return None
    return session


def _settings() -> float | None:
    """The sampling interval, or None when system metrics are off or misconfigured (said once)."""
    global _config_issue
    try:
        on = env("MLTRACK_SYSTEM_METRICS")
        interval = float(env("MLTRACK_SYSTEM_INTERVAL"))
        if on and not interval > 0:
            raise ConfigurationError(
                f"MLTRACK_SYSTEM_INTERVAL={interval:g}: use a number of seconds above 0, e.g. 10"
            )
    except ConfigurationError as exc:
        issue = f"system metrics are off: {exc}"
        if issue != _config_issue:
            log.error("mltrack-system: %s", issue)
        _config_issue = issue
        return None
    _config_issue = ""
    return interval if on else None


@hookimpl
def mltrack_create_run(run: ExperimentRun) -> None:
    """Start sampling the run (the first sample comes one interval later)."""
    interval = _settings()
    if interval is None:
        return
    sink = _session_holding(run.id)
    if sink is None:
        return
    sampler = current_sampler(create=True)
    assert sampler is not None
    sampler.add(run.id, sink, interval)


@hookimpl
def mltrack_finish_run(run_id: str) -> None:
    """Stop sampling the run; with no run left the sampler thread ends."""
    sampler = _sampler
    if sampler is not None:
        sampler.remove(run_id)


@hookimpl
def mltrack_health() -> HealthStatus:
    """Whether system metrics are sampled: the settings, runs sampled, GPUs, cost of a sample."""
    sampler = _sampler
    _settings()  # a variable changed since the last run shows here too
    issues = (f"{_config_issue}; fix the variable",) if _config_issue else ()
    details: dict[str, object] = {"enabled": not _config_issue and bool(env("MLTRACK_SYSTEM_METRICS"))}
    if sampler is not None:
        details.update(runs=len(sampler.runs), gpus=sampler.gpus, gpu_note=sampler.gpu_note)
        details.update(sampler.stats.as_details())
    return HealthStatus(not issues, issues, backend="system", details=details)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    if _sampler is not None:
        _sampler.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
