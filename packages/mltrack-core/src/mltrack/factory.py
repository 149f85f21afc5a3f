"""Entry points of the API: the tracker, the repository and the health check, built from config."""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import attrs

from mltrack.authoring import plain_detail_keys
from mltrack.config import SHARED_OPTIONS, TrackingConfig, configure_backend, current_config, on_config_change
from mltrack.errors import MLTrackError, RunStateError
from mltrack.models import ExperimentStatus, HealthStatus
from mltrack.plugins import ActiveBackends, PluginHost, get_plugin_host
from mltrack.repository import ExperimentRepository
from mltrack.settings import env
from mltrack.tracker import ActiveRun, MLTracker, TrackingSession, exit_status
from mltrack.writer import HookSink, ObservedSink, Sink, Writer, WriterStats

__all__ = [
    "configure_backend",
    "get_experiment_repository",
    "get_ml_tracker",
    "health_check",
    "open_repository",
    "start_run",
]

_lock = threading.RLock()
_backends: ActiveBackends | None = None
_session: TrackingSession | None = None


def _active_backends() -> ActiveBackends:
    global _backends
    with _lock:
        if _backends is None:
            config = current_config()
            _backends = get_plugin_host().activate(config, tolerate_secondary=not config.strict)
        return _backends


def _writer_mode(config: TrackingConfig, host: PluginHost) -> str:
    if config.writer in ("thread", "process"):
        return config.writer
    if config.writer != "auto":
        raise ValueError(f"MLTRACK_WRITER={config.writer!r}: use thread, process or auto")
    registrations = host.select_backends(config)
    return "process" if any(r.out_of_process for r in registrations) else "thread"


def build_session(
    config: TrackingConfig, backends: Callable[[], ActiveBackends], host: PluginHost | None = None
) -> TrackingSession:
    """A session writing through a writer process or an in-process thread, as ``config`` says.

    ``backends`` is called only for the in-process writer, so a trainer whose backend runs in
    a writer process never imports the store.
    """
    host = host or get_plugin_host()
    stats = WriterStats()
    sink: Sink
    tuning: dict[str, Any] = {
        "strict": config.strict,
        "max_retries": config.max_retries,
        "hook_timeout": config.hook_timeout,
        "retry_window": config.retry_window,
    }
    offline = bool(env("MLTRACK_OFFLINE"))
    spool = _open_spool(config, offline)
    if offline:
        from mltrack.spool import SpoolOnlySink

        # No store at all: the spool keeps everything; observers still see every write.
        observers = HookSink(host.observer_targets, stats, counts_points=False, **tuning)
        sink = ObservedSink(SpoolOnlySink(), observers)
    elif _writer_mode(config, host) == "process":
        from mltrack._writer_process import ProcessSink

        # The writer process stores; observers stay here, where in-code plugins live.
        observers = HookSink(host.observer_targets, stats, counts_points=False, **tuning)
        spool_path = None if spool is None else str(spool.path)
        sink = ObservedSink(ProcessSink(config, stats, spool_path), observers)
    else:
        active = backends()
        sink = HookSink(lambda: active.write_targets, stats, **tuning)
        if spool is not None:
            from mltrack.spool import AckingSink, AckLog

            sink = AckingSink(
                sink,
                AckLog(spool.path),
                spool_path=spool.path,
                stats=stats,
                max_points=config.max_buffered_points,
            )
    writer = Writer(
        sink,
        stats=stats,
        flush_interval=config.flush_interval,
        batch_size=config.batch_size,
        max_buffered_points=config.max_buffered_points,
        spool=spool,
    )
    return TrackingSession(
        config,
        writer,
        preflight=[] if offline else _preflights(config, host),
        backends=[r.name for r in host.select_backends(config)],
        reads=backends,
    )


def _open_spool(config: TrackingConfig, offline: bool) -> Any:
    """This session's spool file (None with ``MLTRACK_SPOOL=0``, or if it cannot be created: logged)."""
    if not (offline or env("MLTRACK_SPOOL")):
        return None
    from mltrack.spool import Spool, default_spool_dir

    directory = default_spool_dir()
    try:
        return Spool(directory, config, max_bytes=env("MLTRACK_SPOOL_MAX_BYTES"), offline=offline)
    except OSError as exc:
        if offline:
            raise MLTrackError(
                f"MLTRACK_OFFLINE=1 needs a spool, and {directory} cannot hold one: {exc}"
            ) from exc
        import logging

        logging.getLogger("mltrack").error(
            "mltrack: no spool (%s): %s; tracking goes on without one", directory, exc
        )
        return None


def _preflights(config: TrackingConfig, host: PluginHost) -> list[tuple[str, Callable[[], None]]]:
    """Each selected backend's cheap store check, bound to its settings, primary first."""
    out: list[tuple[str, Callable[[], None]]] = []
    for reg in host.select_backends(config):
        if reg.preflight is not None:
            out.append((reg.name, functools.partial(reg.preflight, config.backend_config(reg.name))))
    return out


def tracking_session() -> TrackingSession:
    """The process-wide session behind every tracker and ``start_run`` (created on first use)."""
    global _session
    with _lock:
        if _session is None:
            _session = build_session(current_config(), _active_backends)
            _recover_spools(_session)
            _handle_sigterm()
            _close_in_multiprocessing_child()
            _record_exit_codes()
        return _session


def _recover_spools(session: TrackingSession) -> None:
    """Deliver, in a detached process, spools left by trainers killed with their writer."""
    spool = session.writer.spool
    if spool is not None and not spool.offline:
        from mltrack.spool import recover_in_background

        recover_in_background(spool.path.parent)


def current_session() -> TrackingSession | None:
    """The process-wide session if one exists, never creating one (for plugins acting on open runs)."""
    return _session


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM while runs are open.

    A KeyboardInterrupt, so code that stops cleanly on Ctrl-C also stops cleanly when a
    scheduler or ``kill`` terminates it: open runs finish INTERRUPTED with every point stored.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated(f"terminated by signal {signum}")


def _handle_sigterm() -> None:
    # Only where nobody else handles SIGTERM, and only from the main thread (Python's rule).
    if not env("MLTRACK_HANDLE_SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


async def get_ml_tracker() -> MLTracker:
    """The tracker for the configured backend(s): ``tracker = await get_ml_tracker()``."""
    return MLTracker(tracking_session())


def _flush_live_session() -> None:
    session = _session
    if session is not None:
        session.flush()


def experiment_repository() -> ExperimentRepository:
    """The repository for the configured primary backend (blocking form)."""
    return ExperimentRepository(_active_backends(), before_read=_flush_live_session)


def open_repository(
    backend: str | TrackingConfig, *, must_exist: bool = False, **options: Any
) -> ExperimentRepository:
    """A repository over a store of its own: ``open_repository("aim", repo_path="/data/aim")``.

    ``backend`` is a backend name (its settings: the current configuration's, overridden by
    ``options``; an unknown or ill-typed one raises :class:`mltrack.errors.ConfigurationError`)
    or a whole :class:`TrackingConfig`. Unlike :func:`experiment_repository`
    it can open a store other than the configured one (to copy runs between stores); close
    it when done (it is a context manager). ``must_exist=True`` opens an existing store only:
    where there is none, :class:`mltrack.errors.StoreNotFoundError` says so instead of an
    empty store being created (for reading; a fan-out's secondary stores that cannot open
    stand in as failed ones, as for tracking, since reads come from the primary).
    """
    if isinstance(backend, TrackingConfig):
        config = backend
    else:
        base = current_config()
        # storage_path and experiment_name are the shared settings, as in configure_backend.
        shared = {k: options.pop(k) for k in SHARED_OPTIONS if k in options}
        merged = {**base.backend_options.get(backend, {}), **options}
        config = attrs.evolve(
            base, backends=(backend,), backend_options={**base.backend_options, backend: merged}, **shared
        )
    if must_exist:
        config = attrs.evolve(config, must_exist=True)
    backends = get_plugin_host().activate(config, tolerate_secondary=config.must_exist and not config.strict)
    return ExperimentRepository(backends, owns_backends=True)


async def get_experiment_repository() -> ExperimentRepository:
    """The repository to query past and running experiments: ``repo = await get_experiment_repository()``."""
    return experiment_repository()


def start_run(
    experiment_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    tags: Iterable[str] | None = None,
    description: str | None = None,
    resume: str | None = None,
    start_step: int | None = None,
) -> ActiveRun:
    """Start a run for a plain training loop: ``with mltrack.start_run("exp", cfg) as run: ...``.

    ``resume=<run id or unique prefix>`` continues that stored run (finished, or crashed)
    instead of starting one: automatic steps go on after its last step (or from
    ``start_step``), ``config`` is merged into its config and ``tags`` added; it keeps its
    experiment, name and description. See :meth:`mltrack.tracker.TrackingSession.resume_run`.
    """
    session = tracking_session()
    run = session.create_run(
        experiment_name,
        config,
        name=name,
        tags=tags,
        description=description,
        resume=resume,
        start_step=start_step,
    )
    return ActiveRun(session, run)


def health_sync(config: TrackingConfig | None = None) -> HealthStatus:
    """Whether tracking works right now (blocking form of :func:`health_check`).

    ``config`` checks the stores it names instead of the ones in use (``mltrack health``
    passes the configuration with ``must_exist``, so a missing store is reported, not created).
    """
    if config is None:
        try:
            backends = _active_backends()
        except MLTrackError as exc:
            return HealthStatus(False, (str(exc),), backend=",".join(current_config().backends), details={})
        return _health(backends, _session)
    try:
        own = get_plugin_host().activate(config, tolerate_secondary=not config.strict)
    except MLTrackError as exc:
        return HealthStatus(False, (str(exc),), backend=",".join(config.backends), details={})
    try:
        return _health(own, None)
    finally:
        own.close()


def _health(backends: ActiveBackends, session: TrackingSession | None) -> HealthStatus:
    """Each backend's health and, when ``session`` is given, its writer's counts."""
    issues: list[str] = []
    details: dict[str, Any] = {"backends": {}}
    for name, answer in backends.health():
        if isinstance(answer, HealthStatus):
            # Shown under the backend's name, once: a backend that named itself too is not repeated.
            issues.extend(f"{name}: {i.removeprefix(f'{name}: ')}" for i in answer.issues)
            plain = plain_detail_keys(name, answer.details)
            details["backends"][name] = {"is_healthy": answer.is_healthy, **plain}
            if not answer.is_healthy and not answer.issues:
                issues.append(f"{name}: unhealthy")
        elif isinstance(answer, Exception):
            issues.append(f"{name}: health check raised {type(answer).__name__}: {answer}")
        else:
            details["backends"][name] = {"is_healthy": True}
    if session is not None:
        stats = session.stats
        details["writer"] = {
            "points_logged": session.writer.points_logged,
            "points_delivered": stats.points_delivered,
            "points_undelivered": stats.points_undelivered,
            "pending_points": session.writer.pending_points,
            "write_errors": stats.write_errors,
            "retries": stats.retries,
            "writer_restarts": stats.writer_restarts,
            "points_waiting": stats.points_waiting,
        }
        if stats.points_waiting:
            issues.append(
                f"{stats.points_waiting} point(s) wait in the spool for a store that did not take them "
                f"(delivered when it does, or by `mltrack sync`); last error: {stats.last_error}"
            )
        spool = session.writer.spool
        if spool is not None:
            _, spooled = spool.pending()
            details["writer"].update(
                spool=str(spool.path),
                pending_spooled_points=spooled,
                points_not_spooled=spool.points_not_spooled,
            )
            if spool.points_not_spooled:
                issues.append(
                    f"{spool.points_not_spooled} point(s) were not spooled ({spool.failed or 'MLTRACK_SPOOL_MAX_BYTES reached'}): "
                    "a kill of trainer and writer together could lose them"
                )
        if stats.points_undelivered or stats.write_errors:
            issues.append(
                f"{stats.write_errors} write(s) failed, {stats.points_undelivered} point(s) not stored; "
                f"last error: {stats.last_error}"
            )
    host = get_plugin_host()
    # A plugin left out for breaking the hook contract would lose its data unseen: an issue.
    issues.extend(f"{name}: did not load: {err}" for name, err in sorted(host.contract_errors.items()))
    load_errors = host.load_errors
    if load_errors:
        details["plugin_load_errors"] = dict(load_errors)
    return HealthStatus(not issues, tuple(issues), backend=",".join(backends.names), details=details)


async def health_check() -> HealthStatus:
    """Whether tracking works right now: ``(await health_check()).is_healthy``."""
    return health_sync()


def reset() -> None:
    """Drain and drop the session and backends; the next call rebuilds them from config."""
    global _session, _backends
    with _lock:
        session, _session = _session, None
        backends, _backends = _backends, None
    if session is not None:
        session.close(ExperimentStatus.INTERRUPTED)
    if backends is not None:
        backends.close()


on_config_change(reset)


_NO_EXIT = object()
_exit_code: object = _NO_EXIT
"""The code of the last ``sys.exit()`` called in the main thread (``_NO_EXIT``: none)."""


def _record_exit_codes() -> None:
    """Make ``sys.exit`` remember its code, so runs open at exit finish with the right status.

    Python hands atexit handlers neither the exit code nor the ``SystemExit`` that ended
    the program; a run left open by ``sys.exit(3)`` would otherwise read COMPLETED.
    """
    original = sys.exit
    if getattr(original, "_mltrack_records_code", False):
        return

    @functools.wraps(original)
    def exit(status: object = None) -> NoReturn:
        global _exit_code
        if threading.current_thread() is threading.main_thread():
            _exit_code = status
        original(status)  # type: ignore[arg-type]  # sys.exit takes any object
        raise SystemExit(status)  # not reached: sys.exit raises

    exit._mltrack_records_code = True  # type: ignore[attr-defined]
    sys.exit = exit


def _exit_status() -> tuple[ExperimentStatus, int | None]:
    """How the program is ending: the status of runs still open, and a non-zero exit code."""
    # Set by the interpreter when an uncaught exception ends the program.
    exc = getattr(sys, "last_value", None)
    if isinstance(exc, KeyboardInterrupt):
        return ExperimentStatus.INTERRUPTED, None
    if exc is not None:
        return ExperimentStatus.FAILED, None
    if _exit_code is not _NO_EXIT:
        return exit_status(_exit_code)
    return ExperimentStatus.COMPLETED, None


@atexit.register
def _drain_at_exit() -> None:
    # Once only: a spawned multiprocessing worker runs it from multiprocessing's finalizers and
    # again from atexit (it exits through sys.exit), when its writer is already closed.
    global _session, _backends
    session, _session = _session, None
    backends, _backends = _backends, None
    if session is not None:
        status, code = _exit_status()
        session.close(status, exit_code=code)
    if backends is not None:
        backends.close()


def _after_fork_in_child() -> None:
    """A forked child starts with no session: the one it inherited is its parent's.

    Runs the parent opened stay the parent's: logging into them here raises
    :class:`RunStateError` at the first call (the child has no flusher, so its points would
    never be stored), and the child's exit never closes the parent's writer. A run the
    child opens gets a session, and a writer, of its own.
    """
    global _lock, _session, _backends
    _lock = threading.RLock()  # a parent thread may have held it at the fork
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a child's owner (a Pool) stops it by SIGTERM
    session, _session, _backends = _session, None, None
    if session is not None:
        parent, child = os.getppid(), os.getpid()
        session.writer.disown_after_fork(
            RunStateError(
                f"this process ({child}) was forked from process {parent}, which opened this run: a "
                "forked child cannot log into its parent's run (it has no writer for it). Log from "
                "the parent, open a run of its own here with mltrack.start_run(), or start workers "
                "with multiprocessing's 'spawn' or 'forkserver' method"
            )
        )


def _close_in_multiprocessing_child() -> None:
    """In a multiprocessing worker, finish this process's runs when the worker ends.

    Workers leave through ``os._exit`` (no atexit handlers); multiprocessing's finalizers run
    before it, so the session closes there, storing everything the worker logged. SIGTERM
    is left to multiprocessing (a pool's ``terminate``): a run left open then reads CRASHED,
    with every point its writer received.
    """
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing.util import Finalize

    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a pool stops its workers by SIGTERM

    Finalize(None, _drain_at_exit, exitpriority=100)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
