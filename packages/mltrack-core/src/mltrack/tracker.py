"""Recording runs: the async ``MLTracker`` of the seed and a plain sync API, over one writer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mltrack.authoring import check_artifact_name
from mltrack.config import TrackingConfig
from mltrack.errors import ArtifactError, BackendError, RunNotFoundError, RunStateError, ValidationError
from mltrack.models import (
    MAX_STEP,
    RESUMED_TAG,
    ArtifactType,
    Context,
    ExperimentRun,
    ExperimentStatus,
    ModelArtifact,
    TrainingMetrics,
    _to_config,
    _to_tags,
    final_metric_key,  # also exported from here: backends written before it moved import it so
    mask_context,
    mask_secrets,
    to_artifact_type,
    to_context,
    to_metric_value,
    to_status,
    to_step,
    validate_name,
)
from mltrack.writer import Writer, WriterStats

if TYPE_CHECKING:
    from mltrack.plugins import ActiveBackends

__all__ = ["ActiveRun", "MLTracker", "TrackingSession", "exit_status", "final_metric_key", "new_run_id"]

RunRef = ExperimentRun | str
_now = time.time
PROGRESS_EVERY = 0.25
"""Seconds between two progress updates of one run handed on; calls in between are coalesced."""
log = logging.getLogger(__name__)
ARTIFACT_NOT_STORED_TAG = "mltrack:artifact-not-stored"
"""A run one of whose artifacts a store failed to keep (``log_artifact`` raised) carries this tag."""
EXIT_CODE_TAG = "mltrack:exit-code"
"""A run finished FAILED by a non-zero ``sys.exit`` carries ``<this>=<code>`` (``mltrack:exit-code=3``)."""


def new_run_id() -> str:
    """A fresh run id: 24 lowercase hex characters (the shape Aim uses for run hashes)."""
    return uuid.uuid4().hex[:24]


def _run_id(run: RunRef) -> str:
    return run.id if isinstance(run, ExperimentRun) else run


def exit_status(code: object) -> tuple[ExperimentStatus, int | None]:
    """The status of a run ended by ``SystemExit(code)``, and the exit code the shell sees if not 0.

    ``None`` and 0 are success (COMPLETED); any other int fails with that code, and any other
    object (``sys.exit("fatal: ...")``, which Python prints) fails with code 1, as every
    scheduler and shell reads them.
    """
    if code is None or (isinstance(code, int) and code == 0):
        return ExperimentStatus.COMPLETED, None
    return ExperimentStatus.FAILED, int(code) if isinstance(code, int) else 1


class _Progress:
    """One run's progress reports: where the ETA's rate starts, and the update not handed on yet."""

    __slots__ = ("first_done", "pending", "sent_at", "started")

    def __init__(self, started: float, first_done: float) -> None:
        self.started = started
        self.first_done = first_done
        self.sent_at: float | None = None
        self.pending: dict[str, Any] | None = None


def _progress_number(what: str, value: object) -> float:
    """``value`` as a finite number >= 0, or :class:`ValidationError` naming ``what``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValidationError(f"progress {what} must be a number, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ValidationError(f"progress {what} must be a finite number >= 0, got {value!r}")
    return number


class TrackingSession:
    """The state shared by :class:`MLTracker` and :class:`ActiveRun`: open runs and the writer."""

    def __init__(
        self,
        config: TrackingConfig,
        writer: Writer,
        *,
        preflight: Sequence[tuple[str, Callable[[], None]]] = (),
        backends: Sequence[str] = (),
        reads: Callable[[], ActiveBackends] | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self._reads = reads
        """The stores to read a run to resume from (built on first use: the writer may be a process)."""
        self.backends = tuple(backends) or tuple(config.backends)
        """The backends written to, primary (the one reads ask) first."""
        self._preflight = list(preflight)
        self._open: dict[str, ExperimentRun] = {}
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._progress: dict[str, _Progress] = {}

    @property
    def stats(self) -> WriterStats:
        """The writer's counters."""
        return self.writer.stats

    @property
    def open_runs(self) -> list[ExperimentRun]:
        """Runs created here and not finished yet."""
        return list(self._open.values())

    def create_run(
        self,
        experiment_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        run_id: str | None = None,
        resume: str | None = None,
        start_step: int | None = None,
    ) -> ExperimentRun:
        """Start a run and return it; it is visible to readers once the writer hands it on.

        Raises :class:`BackendError` when the primary store cannot take a run (read-only,
        full, missing): writes are asynchronous, so each backend's cheap preflight check is
        what lets this fail now rather than lose the run's points later.

        ``resume``: the id (or a unique prefix) of a stored run to continue instead of a new
        one; see :meth:`resume_run` (``start_step`` applies to it only).
        """
        if resume is not None:
            if run_id is not None:
                raise ValidationError("create_run takes run_id or resume, not both")
            return self.resume_run(resume, config, tags=tags, start_step=start_step)
        if start_step is not None:
            raise ValidationError("start_step is for a resumed run: pass resume=<run id> with it")
        self._check_stores()
        run = ExperimentRun(
            id=run_id or new_run_id(),
            experiment_name=experiment_name or self.config.experiment_name,
            config=self._plain_config(config),
            name=None if name is None else validate_name(name, "run name"),
            tags=_to_tags(tags),
            description=description,
        )
        with self._lock:
            self._open[run.id] = run
        self.writer.submit("mltrack_create_run", run=run)
        return run

    def resume_run(
        self,
        run_id: str,
        config: Mapping[str, Any] | None = None,
        *,
        tags: Iterable[str] | None = None,
        start_step: int | None = None,
    ) -> ExperimentRun:
        """Continue the stored run ``run_id`` (full id or unique prefix): log into it again.

        The run reads RUNNING again and gets the tag ``mltrack:resumed=<n>`` (``n``: how many
        times it was resumed, :attr:`ExperimentSummary.resumed`). Automatic steps continue
        after each metric's last stored step, or all start at ``start_step``. ``config`` is
        merged into the stored config (new keys added, a key given again takes the new value),
        ``tags`` are added. A finished run (any status) or a crashed one can be resumed; a run
        still RUNNING (its writer is alive) cannot: :class:`RunStateError`. An unknown id, or a
        prefix matching several runs (listed), raises :class:`RunNotFoundError`; a backend
        without the ``mltrack_resume_run`` hook raises :class:`BackendError` naming it.
        """
        if start_step is not None:
            start_step = to_step(start_step)
        plain = self._plain_config(config)
        new_tags = _to_tags(tags)
        if self._reads is None:
            raise RunStateError("this session cannot read its stores, so it cannot resume a run")
        from mltrack.repository import ExperimentRepository

        backends = self._reads()
        self._check_resumable(backends)
        repo = ExperimentRepository(backends, before_read=self.flush)
        try:
            try:
                full_id = repo.resolve_id(run_id)
            except RunNotFoundError:
                # Created by a trainer killed with its writer before any store had the run?
                if not self._deliver_spooled(run_id):
                    raise
                full_id = repo.resolve_id(run_id)
        except RunNotFoundError as exc:
            raise RunNotFoundError(f"cannot resume: {exc}") from None
        with self._lock:
            if full_id in self._open:
                raise RunStateError(f"run {full_id} is open in this process already: log into it")
        summary = repo.get_experiment_sync(full_id)
        if summary.status is ExperimentStatus.RUNNING:
            raise RunStateError(
                f"run {full_id} is RUNNING: its writer process is alive (or on another machine), "
                "and a run has one writer at a time. Stop that process (a run whose writer died "
                "reads CRASHED and can be resumed), or start a new run"
            )
        if self._deliver_spooled(full_id):
            summary = repo.get_experiment_sync(full_id)
        self._check_stores()
        last: dict[tuple[str, Context], tuple[int, float]] = {}
        for series in repo.get_experiment_metrics_sync(full_id).all_series:
            if len(series.steps):
                last[(series.name, to_context(series.context))] = (
                    int(series.steps[-1]),
                    float(series.values[-1]),
                )
        experiment = summary.experiment_name or self.config.experiment_name
        run = ExperimentRun(
            id=full_id,
            experiment_name=experiment,
            config={**summary.config, **plain},
            start_time=summary.start_time,
            name=summary.name if summary.name != experiment else None,
            tags=(*summary.tags, *new_tags),
            description=summary.description,
        )
        count = summary.resumed + 1
        with self._lock:
            self._open[run.id] = run
            self.writer.resume_steps(run.id, last, start_step)
        self.writer.submit("mltrack_resume_run", run_id=run.id)
        if plain:
            self.writer.submit("mltrack_log_params", run_id=run.id, params=plain)
        self.writer.submit("mltrack_set_tags", run_id=run.id, tags=[*new_tags, f"{RESUMED_TAG}={count}"])
        return run

    def _deliver_spooled(self, run_id: str, wait: float = 120.0) -> bool:
        """Deliver first what a killed trainer spooled for the run (``run_id``: its id or a prefix)
        and no store took; True if there was any.

        A trainer killed with its writer process leaves its last points in its spool; resumed
        before they are delivered, the run's steps would go on from an earlier step and the
        late delivery would overwrite the new points and mark the run CRASHED again. A spool
        of a dead trainer that another process is delivering (mltrack starts one in the
        background) is waited for, up to ``wait`` seconds. Spools of live trainers are not
        read: their runs read RUNNING and are refused anyway.
        """
        spool = getattr(self.writer, "spool", None)
        if spool is None:
            return False
        from mltrack import spool as spools
        from mltrack.authoring import WriterRecord

        delivered = False
        deadline = time.monotonic() + wait
        here = WriterRecord.current().host
        for path in spools._spool_files(spool.path.parent):
            owner = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
            if path == spool.path or not owner.isdigit() or WriterRecord(here, int(owner)).state() == "alive":
                continue  # ours, or a live trainer's (its run reads RUNNING and is refused anyway)
            if not spools.mentions(path, run_id):
                continue  # a byte search, far cheaper than reading the spool's records
            pending = spools._describe(path, alive=False)
            if pending is None or pending.offline or not any(r.startswith(run_id) for r in pending.open_runs):
                continue
            while path.exists() and time.monotonic() < deadline:
                fd = spools._lock(spools._paths(path)[1], exclusive=True)
                if fd is not None:
                    os.close(fd)
                    break
                time.sleep(0.2)  # its writer process, or a recovery, is delivering it now
            if path.exists():
                spools.recover(path)  # raises if still held: never resume ahead of the points
            delivered = True
        return delivered

    def _check_resumable(self, backends: ActiveBackends) -> None:
        """Every store implements ``mltrack_resume_run``: a store without it would lose the run's writes."""
        pm = backends.host.pm
        for name, backend in zip(backends.names, backends.backend_objects):
            if getattr(backend, "broken", None) is not None:
                continue  # a fan-out store that never started: its writes are counted as lost anyway
            hooks = {caller.name for caller in pm.get_hookcallers(backend) or ()}
            if "mltrack_resume_run" not in hooks:
                raise BackendError(
                    f"backend {name!r} does not implement the hook mltrack_resume_run, so it cannot "
                    "continue a stored run: upgrade its plugin, or start a new run"
                )

    def _check_stores(self) -> None:
        for i, (backend, check) in enumerate(self._preflight):
            try:
                check()
            except Exception as exc:
                message = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
                if i == 0:  # the primary: the run would be lost, so say so now
                    raise BackendError(f"backend {backend!r} cannot take a new run: {message}") from exc
                # Another store of a fan-out: the run still goes to the primary; the failing
                # store's writes are retried and counted in health_check().
                log.error("mltrack: backend %r cannot take a new run: %s", backend, message)

    def _plain_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        plain = _to_config(config)
        return plain if self.config.keep_secrets else mask_secrets(plain)

    def _context(self, context: Mapping[str, Any]) -> Context:
        """A metric context frozen, with secrets masked (metric keys are shown like configs)."""
        ctx = to_context(context)
        return ctx if self.config.keep_secrets else mask_context(ctx)

    def _check_open(self, run: RunRef) -> str:
        run_id = _run_id(run)
        if run_id not in self._open:
            raise RunStateError(
                f"run {run_id!r} is not open in this process: create it with create_run() "
                "(runs cannot be logged to after finish_run)"
            )
        return run_id

    def _check_name(self, name: str) -> None:
        if name not in self._names:
            validate_name(name, "metric name")
            if len(self._names) < 100_000:
                self._names.add(name)

    def log_metric(
        self,
        run: RunRef,
        name: str,
        value: object,
        step: object = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one value of metric ``name`` at ``step`` (default: its highest step + 1)."""
        # The hot path of every training loop. A metric logged before, a float and an int step
        # (or none) take the writer's lock-free lane (Writer.lanes; ActiveRun.log_metric has the
        # same lines, inlined: a call costs a third of it); the rest validates and takes the lock.
        run_id = run.id if type(run) is ExperimentRun else _run_id(run)
        w = self.writer
        lanes = w.run_lanes.get(run_id)
        lane = None if lanes is None else lanes.get(name)
        if lane is not None and context is None and value.__class__ is float and not w.hold:
            if step is None:
                step = lane[0] + 1
                lane[0] = step
                lane[1] = value
                w.stream.extend((lane[2], step, value, _now()))
                return
            if step.__class__ is int and 0 <= step <= MAX_STEP:
                if step >= lane[0]:
                    lane[0] = step
                    lane[1] = value
                w.stream.extend((lane[2], step, value, _now()))
                return
        if run_id not in self._open:
            self._check_open(run_id)
        if name not in self._names:
            self._check_name(name)
        v = value if type(value) is float else to_metric_value(name, value)
        if step is not None and (type(step) is not int or step < 0 or step > MAX_STEP):
            step = to_step(step)
        ctx = () if context is None else self._context(context)
        self.writer.log_point(run_id, name, v, step, ctx, _now())

    def log_metrics(
        self,
        run: RunRef,
        metrics: TrainingMetrics | Mapping[str, object],
        step: object = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record several metrics at one step: a ``TrainingMetrics`` or a name -> value mapping."""
        run_id = self._check_open(run)
        if isinstance(metrics, TrainingMetrics):
            values = metrics.as_dict()
            s: int | None = metrics.step if step is None else to_step(step)
            ts = metrics.timestamp.timestamp() if metrics.timestamp is not None else _now()
        else:
            values = {}
            for name, value in metrics.items():
                if name not in self._names:
                    self._check_name(name)
                values[name] = value if type(value) is float else to_metric_value(name, value)
            s = None if step is None else to_step(step)
            ts = _now()
        if values:
            self.writer.log_points(run_id, values, s, () if context is None else self._context(context), ts)

    def log_metrics_while_open(self, run_id: str, metrics: Mapping[str, object]) -> bool:
        """Record ``metrics`` at each one's next step if the run is still open; False if it is not.

        For threads other than the training loop (samplers, observers) that may race the run's
        finish: the check and the append happen under the lock ``finish_run`` takes, so no point
        lands after the run's end.
        """
        with self._lock:
            if run_id not in self._open:
                return False
            self.log_metrics(run_id, metrics)
            return True

    def log_params(self, run: RunRef, params: Mapping[str, Any]) -> None:
        """Add ``params`` to the run's config (converted to plain values)."""
        run_id = self._check_open(run)
        self.writer.submit("mltrack_log_params", run_id=run_id, params=self._plain_config(params))

    def set_tags(self, run: RunRef, tags: Iterable[str]) -> None:
        """Add tags to the run."""
        run_id = self._check_open(run)
        self.writer.submit("mltrack_set_tags", run_id=run_id, tags=list(_to_tags(tags)))

    def log_artifact(
        self,
        run: RunRef,
        path: str | os.PathLike[str],
        artifact_type: ArtifactType | str = ArtifactType.OTHER,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelArtifact:
        """Store a copy of the file at ``path``; returns once it is stored (the file may change after)."""
        run_id = self._check_open(run)
        kind = to_artifact_type(artifact_type)  # a typo fails before the file is read
        source = Path(path)
        if not source.is_file():
            what = "a directory" if source.is_dir() else "missing"
            raise ArtifactError(
                f"artifact {str(path)!r} is {what}: log_artifact takes one existing file "
                "(archive a directory first, e.g. shutil.make_archive)"
            )
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
                size += len(block)
        artifact = ModelArtifact(
            name=check_artifact_name(name if name is not None else source.name),  # the rule backends read too
            artifact_type=kind,
            file_path=str(source.resolve()),
            metadata=self._plain_config(metadata),
            size=size,
            sha256=digest.hexdigest(),
        )
        self._store_artifact(run_id, artifact)
        return artifact

    def _store_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Hand ``artifact`` to the stores and wait; :class:`ArtifactError` if a store did not keep it.

        The writer counts a failed write instead of raising (the training loop must go on),
        so the failure is read from its counters: what failed while only this write was in
        flight, named by the hook it failed in. Everything logged before is drained first.
        """
        stats = self.writer.stats
        self.writer.flush()
        before = dict(stats.errors_by_target)
        self.writer.submit("mltrack_log_artifact", wait=True, run_id=run_id, artifact=artifact)
        failed = [b for b in self.backends if stats.errors_by_target.get(b, 0) > before.get(b, 0)]
        error = stats.last_error or ""
        if failed and "mltrack_log_artifact failed" in error:
            # The run says so too, for whoever reads it later (`mltrack show` lists its tags).
            self.writer.submit("mltrack_set_tags", run_id=run_id, tags=[ARTIFACT_NOT_STORED_TAG])
            message = (
                f"artifact {artifact.name!r:.80} of run {run_id} was not stored by "
                f"{', '.join(repr(b) for b in failed)}: {error}; fix the store (free disk space, "
                "permissions) and log it again, or check `mltrack health`"
            )
            if failed[0] == self.backends[0]:
                raise ArtifactError(message)
            # The primary, which reads are asked of, has it: a fan-out's broken secondary is
            # counted and tagged, and does not stop training (as for every other write).
            log.error("mltrack: %s", message)

    def set_state(self, run: RunRef, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the run's live session state (phase, anything shown live).

        Handed to observers (``mltrack_set_state``; mltrack-redis publishes it) in order with
        the run's other writes; no store keeps it. Meant for a few calls a second (each one
        ends the current metric batch); for a counter updated every step use :meth:`progress`.
        """
        run_id = self._check_open(run)
        plain = self._plain_config(values)  # published live: masked like a config
        with self._lock:
            tracker = self._progress.get(run_id)
            if tracker is not None and tracker.pending is not None:  # coalesced progress goes first
                plain = {**tracker.pending, **plain}
                tracker.pending = None
                tracker.sent_at = time.monotonic()
        if plain:
            self.writer.submit("mltrack_set_state", run_id=run_id, values=plain)

    def progress(self, run: RunRef, done: float, total: float) -> None:
        """Report ``done`` units of work out of ``total`` (timesteps, epochs, batches): state with an ETA.

        Sets ``progress_done``, ``progress_total`` and ``eta_seconds`` (from the rate since the
        run's first progress call; None until one is known). Cheap enough for every step:
        updates closer than ``PROGRESS_EVERY`` seconds are coalesced into the next one handed
        on; the last one always goes out, with the next ``set_state`` or when the run finishes.
        """
        run_id = self._check_open(run)
        done_f, total_f = _progress_number("done", done), _progress_number("total", total)
        if total_f <= 0:
            raise ValidationError(
                f"progress total must be > 0, got {total!r}: pass the amount of work planned"
            )
        now = time.monotonic()
        eta: float | None = None
        with self._lock:
            tracker = self._progress.get(run_id)
            if tracker is None:
                tracker = self._progress[run_id] = _Progress(now, done_f)
            if done_f >= total_f:
                eta = 0.0
            elif done_f > tracker.first_done and now > tracker.started:
                eta = round((total_f - done_f) * (now - tracker.started) / (done_f - tracker.first_done), 3)
            values = _to_config({"progress_done": done, "progress_total": total, "eta_seconds": eta})
            if tracker.sent_at is not None and now - tracker.sent_at < PROGRESS_EVERY and done_f < total_f:
                tracker.pending = values
                return
            tracker.pending = None
            tracker.sent_at = now
        self.writer.submit("mltrack_set_state", run_id=run_id, values=values)

    def final_values(self, run_id: str) -> dict[str, float]:
        """The last value of each metric of the run, keyed as ``final_metrics`` stores them."""
        return {final_metric_key(name, ctx): v for (name, ctx), v in self.writer.last_values(run_id).items()}

    def finish_run(
        self,
        run: RunRef,
        status: ExperimentStatus | str = ExperimentStatus.COMPLETED,
        final_metrics: Mapping[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Finish the run; returns when everything logged to it is stored (or ``timeout`` passed)."""
        run_id = self._check_open(run)
        status = to_status(status)
        finals = self.final_values(run_id)
        for name, value in (final_metrics or {}).items():
            finals[validate_name(name, "final metric name")] = to_metric_value(name, value)
        with self._lock:
            tracker = self._progress.pop(run_id, None)
        if tracker is not None and tracker.pending is not None:  # the last progress is never lost
            self.writer.submit("mltrack_set_state", run_id=run_id, values=tracker.pending)
        with self._lock:  # log_metrics_while_open cannot slip a point in after the finish
            self._open.pop(run_id, None)
            self.writer.forget_run(run_id)
            self.writer.submit(
                "mltrack_finish_run",
                run_id=run_id,
                status=status,
                end_time=datetime.now(timezone.utc),
                final_metrics=finals,
            )
        self.writer.flush(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is stored; False if ``timeout`` ran out."""
        return self.writer.flush(timeout)

    def close(
        self,
        status: ExperimentStatus = ExperimentStatus.INTERRUPTED,
        timeout: float | None = None,
        *,
        exit_code: int | None = None,
    ) -> None:
        """Finish every open run with ``status``, drain the writer and stop it.

        ``exit_code``: the process ends with this non-zero code; each run is tagged with it.
        """
        for run in self.open_runs:
            try:
                if exit_code is not None:
                    self.set_tags(run, [f"{EXIT_CODE_TAG}={exit_code}"])
                self.finish_run(run, status, timeout=timeout)
            except Exception:  # closing must reach the writer even if one finish fails
                pass
        self.writer.close(timeout)


class ActiveRun:
    """A run for plain (sync) training loops: ``with mltrack.start_run("exp") as run: ...``.

    Leaving the ``with`` block finishes the run: COMPLETED, FAILED on an exception,
    INTERRUPTED on KeyboardInterrupt; by ``sys.exit(code)``: COMPLETED for 0 or None, else
    FAILED tagged ``mltrack:exit-code=<code>``.
    """

    def __init__(self, session: TrackingSession, run: ExperimentRun) -> None:
        self._session = session
        self.run = run
        self._writer = session.writer
        self._lanes = session.writer.lanes(run.id)

    @property
    def id(self) -> str:
        """The run id."""
        return self.run.id

    def log_metric(
        self, name: str, value: object, step: object = None, context: Mapping[str, Any] | None = None
    ) -> None:
        """Record one metric value (see :meth:`TrackingSession.log_metric`)."""
        # TrackingSession.log_metric's lock-free lane, inlined (see there).
        lane = self._lanes.get(name)
        w = self._writer
        if lane is not None and context is None and value.__class__ is float and not w.hold:
            if step is None:
                step = lane[0] + 1
                lane[0] = step
                lane[1] = value
                w.stream.extend((lane[2], step, value, _now()))
                return
            if step.__class__ is int and 0 <= step <= MAX_STEP:
                if step >= lane[0]:
                    lane[0] = step
                    lane[1] = value
                w.stream.extend((lane[2], step, value, _now()))
                return
        self._session.log_metric(self.run, name, value, step, context)

    def log_metrics(
        self,
        metrics: TrainingMetrics | Mapping[str, object],
        step: object = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record several metrics at one step."""
        self._session.log_metrics(self.run, metrics, step, context)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add parameters to the run's config."""
        self._session.log_params(self.run, params)

    def set_tags(self, tags: Iterable[str]) -> None:
        """Add tags to the run."""
        self._session.set_tags(self.run, tags)

    def set_state(self, **values: Any) -> None:
        """Set live session state: ``run.set_state(phase="eval")`` (see :meth:`TrackingSession.set_state`)."""
        self._session.set_state(self.run, values)

    def progress(self, done: float, total: float) -> None:
        """Report ``done`` of ``total`` units of work; an ETA is derived (see :meth:`TrackingSession.progress`)."""
        self._session.progress(self.run, done, total)

    def log_artifact(
        self,
        path: str | os.PathLike[str],
        artifact_type: ArtifactType | str = ArtifactType.OTHER,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelArtifact:
        """Store a copy of a file."""
        return self._session.log_artifact(self.run, path, artifact_type, name=name, metadata=metadata)

    def finish(
        self,
        status: ExperimentStatus | str = ExperimentStatus.COMPLETED,
        final_metrics: Mapping[str, object] | None = None,
    ) -> None:
        """Finish the run and wait until everything is stored."""
        self._session.finish_run(self.run, status, final_metrics)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.run.id not in {r.id for r in self._session.open_runs}:
            return
        if exc_type is None:
            status = ExperimentStatus.COMPLETED
        elif isinstance(exc, SystemExit):
            status, code = exit_status(exc.code)
            if code is not None:
                self._session.set_tags(self.run, [f"{EXIT_CODE_TAG}={code}"])
        elif issubclass(exc_type, KeyboardInterrupt):
            status = ExperimentStatus.INTERRUPTED
        else:
            status = ExperimentStatus.FAILED
        self.finish(status)


class MLTracker:
    """Async tracking API of the seed: ``run = await tracker.create_run(...)``; log; finish.

    Log calls only append to the writer's buffer, so they return at once; ``finish_run``
    and ``flush`` wait for the store without blocking the event loop.
    """

    def __init__(self, session: TrackingSession) -> None:
        self.session = session

    async def create_run(
        self,
        experiment_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        resume: str | None = None,
        start_step: int | None = None,
    ) -> ExperimentRun:
        """Start a run of ``experiment_name`` (default ``ML_EXPERIMENT_NAME``) with ``config``.

        ``resume=<run id or unique prefix>`` continues that stored run instead (see
        :meth:`TrackingSession.resume_run`); it reads the store in a worker thread.
        """
        if resume is not None:
            return await asyncio.to_thread(
                self.session.create_run,
                experiment_name,
                config,
                name=name,
                tags=tags,
                description=description,
                resume=resume,
                start_step=start_step,
            )
        if start_step is not None:
            raise ValidationError("start_step is for a resumed run: pass resume=<run id> with it")
        return self.session.create_run(experiment_name, config, name=name, tags=tags, description=description)

    async def log_metrics(
        self,
        run: RunRef,
        metrics: TrainingMetrics | Mapping[str, object],
        step: object = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record several metrics at one step (one buffer append for all of them)."""
        self.session.log_metrics(run, metrics, step, context)

    async def log_metric(
        self,
        run: RunRef,
        name: str,
        value: object,
        step: object = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one metric value at ``step`` (default: its last step + 1)."""
        self.session.log_metric(run, name, value, step, context)

    async def log_params(self, run: RunRef, params: Mapping[str, Any]) -> None:
        """Add parameters to the run's config."""
        self.session.log_params(run, params)

    async def set_tags(self, run: RunRef, tags: Iterable[str]) -> None:
        """Add tags to the run."""
        self.session.set_tags(run, tags)

    async def set_state(self, run: RunRef, **values: Any) -> None:
        """Set live session state of the run (phase, anything shown live); no store keeps it."""
        self.session.set_state(run, values)

    async def progress(self, run: RunRef, done: float, total: float) -> None:
        """Report ``done`` of ``total`` units of work; an ETA is derived."""
        self.session.progress(run, done, total)

    async def log_artifact(
        self,
        run: RunRef,
        path: str | os.PathLike[str],
        artifact_type: ArtifactType | str = ArtifactType.OTHER,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelArtifact:
        """Store a copy of the file at ``path`` as an artifact of ``artifact_type``."""
        return await asyncio.to_thread(
            self.session.log_artifact, run, path, artifact_type, name=name, metadata=metadata
        )

    async def finish_run(
        self,
        run: RunRef,
        status: ExperimentStatus | str = ExperimentStatus.COMPLETED,
        final_metrics: Mapping[str, object] | None = None,
    ) -> None:
        """Finish the run with ``status``; ``final_metrics`` default to each metric's last value."""
        await asyncio.to_thread(self.session.finish_run, run, status, final_metrics)

    async def flush(self) -> None:
        """Wait until everything logged so far is stored."""
        await asyncio.to_thread(self.session.flush)
