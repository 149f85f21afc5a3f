"""The ``aim`` backend: mltrack's write, read and health hooks over an Aim repository.

Mapping (all native Aim data, so Aim's UI, CLI and SDK show it as if Aim had written it):

* run id -> Aim run hash (mltrack's ids have the same shape); experiment -> Aim experiment;
  name, description, tags -> Aim's run name, description and tags;
* config -> ``run["hparams"]``; metrics -> Aim metric sequences (step, value, time, context);
* status, start and end time, final metrics -> ``run["mltrack"]`` (a run parameter, shown
  by Aim's UI); Aim's own end time is set when the run finishes, so Aim shows it finished;
* artifacts -> Aim's artifact storage (``file://`` URI beside the repository), with
  mltrack's type, size, sha256 and metadata in ``run["mltrack"]["artifacts"]``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from aim.sdk.run import Run

from mltrack.authoring import WriterRecord
from mltrack.config import BackendConfig
from mltrack.errors import BackendError, RunNotFoundError
from mltrack.hookspecs import hookimpl
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    HealthStatus,
    MetricBatch,
    MetricSeries,
    ModelArtifact,
    RunFilter,
    UiHandle,
    to_plain,
)
from mltrack.servers import http_ok, port_free
from mltrack.storage import free_bytes
from mltrack_aim import internals
from mltrack_aim.batch import MetricWriter, aim_version, batch_path_enabled
from mltrack_aim.internals import RunIndex, drop_read_snapshots, writer_state
from mltrack_aim.processes import start_aim_ui
from mltrack_aim.settings import AimSettings, is_writable, require_repo, storage_problems
from mltrack_aim.store import open_repo

__all__ = ["AimBackend"]

log = logging.getLogger("mltrack.aim")

_NAMESPACE = WriterRecord.current().pid_namespace
"""This process's PID namespace: a writer recorded in another one is judged by its record."""

MLTRACK_KEY = "mltrack"
"""The run parameter holding what Aim has no field for: status, times, final metrics, artifacts."""


def _utc(ts: float | None) -> datetime | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return datetime.fromtimestamp(float(ts), timezone.utc)


def _plain_dict(value: object) -> dict[str, Any]:
    plain = to_plain(value) if value is not None else {}
    return plain if isinstance(plain, dict) else {}


class AimBackend:
    """An Aim repository (local folder or ``aim://`` server) as an mltrack backend."""

    def __init__(self, settings: AimSettings) -> None:
        self.settings = settings
        if settings.must_exist:
            require_repo(settings)  # reading a mistyped path must not leave an empty repository there
        try:
            self.repo: Any = open_repo(settings.repo)
        except OSError as exc:
            raise BackendError(
                f"cannot open the Aim repository {settings.repo} ({settings.source}): "
                f"{exc.strerror or exc}: fix the folder or point {settings.source} elsewhere"
            ) from exc
        self.index = RunIndex(self.repo, timeout=settings.index_timeout)
        self._runs: dict[str, Any] = {}  # aim.Run objects open for writing, by run id
        self._writers: dict[str, MetricWriter] = {}
        self._creating: set[str] = set()  # runs whose creation has not completed (retried in full)
        self._lock = threading.RLock()
        self._artifacts_dir = Path(settings.artifacts_dir)
        # Bulk column reads use Aim's internal layout: local repositories of verified Aim only.
        self._fast_reads = internals.fast_paths() and not settings.is_remote

    @classmethod
    def from_config(cls, config: BackendConfig) -> AimBackend:
        """Build the backend from mltrack's backend configuration."""
        return cls(AimSettings.from_backend_config(config))

    # --- helpers ------------------------------------------------------------------------

    def _open_run(self, run_id: str) -> Any:
        run = self._runs.get(run_id)
        if run is not None:
            return run
        # A write for a run this backend did not create (e.g. after a restart): resume it.
        if run_id not in self.index.all_runs():
            raise RunNotFoundError(f"aim backend: no run {run_id!r} in {self.settings.repo}")
        run = internals.resume_run(self.repo, run_id)
        run[MLTRACK_KEY, "writer"] = WriterRecord.current().to_json()  # this process writes it now
        self._runs[run_id] = run
        return run

    def _writer(self, run_id: str) -> MetricWriter:
        writer = self._writers.get(run_id)
        if writer is None:
            writer = self._writers[run_id] = MetricWriter(self._open_run(run_id))
        return writer

    def _publish(self, run_id: str) -> None:
        """Index the run now, so plain Aim readers (``query_runs``, ``aim up``) see it at once.

        Not deferred: a run whose writer is killed before a deferred pass would stay unindexed,
        and readers (mltrack's own too) would not find it.
        """
        left = self.index.index([run_id])
        if left:
            log.info("mltrack-aim: run %s not indexed yet (index busy); readers will index it", left)

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """One write at a time; one an ``aim server`` restart interrupted is raised to be retried."""
        with self._lock, internals.across_server_restarts(self.repo, what):
            yield

    def _wait_remote(self) -> None:
        # Remote writes go through a client-side queue; a hook must return only once stored.
        internals.wait_remote(self.repo)

    def _release(self, run_id: str) -> None:
        """Close the run's Aim objects and let go of their database handles."""
        self._writers.pop(run_id, None)
        run: Any = self._runs.pop(run_id, None)
        if run is not None:
            run.close()
            del run
            # A closed Run keeps its RocksDB handles (and locks) until garbage-collected, and
            # another opener would fail; a full gc.collect() costs ~100 ms here, so close the
            # run's writable containers explicitly instead.
            internals.close_run_containers(self.repo, run_id)

    # --- writes -------------------------------------------------------------------------

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        """Create the Aim run under mltrack's id, with experiment, name, config and tags.

        Idempotent: a create retried after a failure part-way (a server restart) carries on
        with the same Aim run and writes every field again.
        """
        with self._writing(f"creating run {run.id}"):
            aim_run = self._runs.get(run.id)
            if aim_run is not None and run.id not in self._creating:
                return
            if aim_run is None:
                if run.id in self.index.all_runs():
                    aim_run = internals.resume_run(self.repo, run.id)  # a retried create: carry on
                    aim_run.experiment = run.experiment_name
                else:  # created in its experiment: setting it again would cost another SQLite commit
                    aim_run = internals.new_run(self.repo, run.id, run.experiment_name)
                self._runs[run.id] = aim_run
                self._creating.add(run.id)
            self.index.deleted.discard(run.id)  # the same id written anew (a copy back, say)
            aim_run.name = run.run_name
            if run.description is not None:
                aim_run.description = run.description
            for tag in run.tags:
                aim_run.add_tag(tag)
            aim_run["hparams"] = _aim_params(run.config)
            aim_run[MLTRACK_KEY] = {
                "id": run.id,
                "status": ExperimentStatus.RUNNING.value,
                "start_time": run.start_time.timestamp(),
                "end_time": None,
                "final_metrics": {},
                "artifacts": {},
                "writer": WriterRecord.current().to_json(),
            }
            aim_run.set_artifacts_uri(self._artifacts_dir.as_uri())
            self._wait_remote()
            self._publish(run.id)
            self._creating.discard(run.id)

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        """Write the batch, one (metric, context) sequence at a time, by the cheapest safe path."""
        with self._writing(f"logging metrics of run {run_id}"):
            writer = self._writer(run_id)
            for name, context, steps, values, timestamps in batch.groups():
                writer.write(name, context, steps, values, timestamps)
            self._wait_remote()

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's hparams."""
        with self._writing(f"logging params of run {run_id}"):
            run = self._open_run(run_id)
            for key, value in params.items():
                run["hparams", key] = _aim_params(value)
            self._wait_remote()

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add Aim tags."""
        with self._writing(f"tagging run {run_id}"):
            run = self._open_run(run_id)
            existing = set(run.tags)
            for tag in tags:
                if tag not in existing:
                    run.add_tag(tag)
            self._wait_remote()

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Copy the file into Aim's artifact storage and record mltrack's metadata beside it."""
        with self._writing(f"storing an artifact of run {run_id}"):
            run = self._open_run(run_id)
            run.log_artifact(artifact.file_path, name=artifact.name)
            run[MLTRACK_KEY, "artifacts", artifact.name] = {
                "type": artifact.artifact_type.value,
                "size": artifact.size,
                "sha256": artifact.sha256,
                "metadata": to_plain(artifact.metadata),
            }
            self._wait_remote()

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        """Store status, end time and final metrics, then close the Aim run (Aim shows it finished)."""
        with self._writing(f"finishing run {run_id}"):
            run = self._open_run(run_id)
            run[MLTRACK_KEY, "final_metrics"] = {str(k): float(v) for k, v in final_metrics.items()}
            run[MLTRACK_KEY, "end_time"] = end_time.timestamp()
            run[MLTRACK_KEY, "status"] = ExperimentStatus(status).value
            self._release(run_id)  # close(): Aim's end_time, locks released, remote queue drained
            self._publish(run_id)

    @hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        """Reopen a finished or crashed run for writing (Aim's ``Run(run_hash=...)``): RUNNING again.

        Opening it writable clears Aim's ``end_time`` and takes its lock; this process is
        recorded as its writer, so the run reads CRASHED again if it dies too.
        """
        with self._writing(f"resuming run {run_id}"):
            run = self._open_run(run_id)
            run[MLTRACK_KEY, "status"] = ExperimentStatus.RUNNING.value
            run[MLTRACK_KEY, "end_time"] = None
            run[MLTRACK_KEY, "writer"] = WriterRecord.current().to_json()
            self._wait_remote()
            self._publish(run_id)

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run's data, its index entry and its artifact files."""
        with self._lock:
            self._release(run_id)
            drop_read_snapshots(self.repo, [run_id])
            gc.collect()
            if run_id in self.index.all_runs():
                deadline = time.monotonic() + self.settings.index_timeout
                while not self.repo.delete_run(run_id):  # fails while another process holds the index
                    if time.monotonic() >= deadline:
                        raise BackendError(
                            f"could not delete run {run_id}: Aim's index stayed locked; "
                            "retry, or stop `aim up` for a moment"
                        )
                    time.sleep(0.1)
            shutil.rmtree(self._artifacts_dir / run_id, ignore_errors=True)
            self.index.deleted.add(run_id)

    # --- reads --------------------------------------------------------------------------

    def _summary(self, run_hash: str, *, reread: bool = True) -> ExperimentSummary | None:
        run = Run(run_hash, repo=self.repo, read_only=True)
        info = _plain_dict(run.get(MLTRACK_KEY))
        if not info and run.get("hparams") is None and not internals.is_indexed(self.repo, run_hash):
            return None  # not in the index (it was busy): nothing trustworthy to report yet
        aim_end = run.end_time
        if "status" in info:
            status = ExperimentStatus(info["status"])
        else:  # a run written by Aim itself: finished once Aim closed it
            status = ExperimentStatus.RUNNING if aim_end is None else ExperimentStatus.COMPLETED
        end = _utc(info.get("end_time")) or _utc(aim_end)
        if status is ExperimentStatus.RUNNING:
            checked = self._check_alive(run_hash, aim_end, end, info.get("writer"))
            if checked is None and reread:  # what was read is older than the writer's finish
                drop_read_snapshots(self.repo, [run_hash])
                return self._summary(run_hash, reread=False)
            status, end = checked or (status, end)
        start = _utc(info.get("start_time")) or _utc(run.creation_time) or datetime.now(timezone.utc)
        experiment = run.experiment
        name = run.name or experiment or run_hash
        return ExperimentSummary(
            experiment_id=run_hash,
            name=name,
            status=status,
            start_time=start,
            end_time=end,
            config=_plain_dict(run.get("hparams")),
            final_metrics={k: float(v) for k, v in _plain_dict(info.get("final_metrics")).items()},
            tags=tuple(run.tags or ()),
            experiment_name=experiment,
            description=run.description,
        )

    def _check_alive(
        self, run_hash: str, aim_end: float | None, end: datetime | None, writer: Any = None
    ) -> tuple[ExperimentStatus, datetime | None] | None:
        """RUNNING if the run's writer is alive, else CRASHED (and finalized in Aim once).

        None if the writer finished the run before it went (what the caller read is older).

        A writer in another PID namespace (a container) is looked up by mltrack's writer
        record, since Aim's lock names its pid inside the container, which means another
        process (or none) here; where that cannot be seen, Aim's check-ins decide.
        """
        if run_hash in self._runs:
            return ExperimentStatus.RUNNING, None
        if aim_end is not None:
            # Aim closed it but mltrack never finished it: the writer went away. An aim server
            # closes the runs of a client whose heartbeats stopped for 5 minutes.
            state = "dead"
        else:
            record = WriterRecord.from_json(writer if isinstance(writer, Mapping) else None)
            foreign = record is not None and bool(record.pid_namespace) and record.pid_namespace != _NAMESPACE
            state = record.state() if record is not None and foreign else "unknown"
            if state == "unknown":
                state = writer_state(self.repo, run_hash, self.settings.crash_grace, foreign=foreign)
        if state != "dead":
            return ExperimentStatus.RUNNING, None
        crashed_at = self._finalize_crashed(run_hash)
        if crashed_at is None:
            return None
        return ExperimentStatus.CRASHED, end or _utc(aim_end) or crashed_at

    def _finalize_crashed(self, run_hash: str) -> datetime | None:
        """Mark a run whose writer died CRASHED in Aim and close it, so Aim's UI shows it finished.

        None if the run, opened again, is no longer RUNNING: its writer finished it before it went.
        """
        now = datetime.now(timezone.utc)
        finished_before = False
        try:
            run: Any = internals.resume_run(self.repo, run_hash)  # Aim lifts a dead writer's lock itself
        except Exception as exc:  # another reader got there first, or the lock is foreign
            log.debug("mltrack-aim: could not finalize crashed run %s: %s", run_hash, exc)
            return now
        try:
            if run.get((MLTRACK_KEY, "status")) in (None, ExperimentStatus.RUNNING.value):
                run[MLTRACK_KEY, "status"] = ExperimentStatus.CRASHED.value
                run[MLTRACK_KEY, "end_time"] = now.timestamp()
            else:
                finished_before = True
        finally:
            run.close()
            del run
            gc.collect()
        self.index.index([run_hash])
        return None if finished_before else now

    def _read_runs(self, run_hashes: Sequence[str]) -> list[ExperimentSummary]:
        out = []
        # Aim pools containers weakly: holding the index open here spares every Run below
        # from reopening it (about 1 ms a run).
        index = internals.hold_index(self.repo)  # noqa: F841
        # Many runs: load every run's name, experiment and tags in one SQL query.
        with internals.bulk_run_props(self.repo, many=len(run_hashes) > 8):
            for h in run_hashes:
                try:
                    summary = self._summary(h)
                except Exception as exc:  # a run being deleted or half-written: skip it, say so
                    log.debug("mltrack-aim: skipped run %s: %s", h, exc)
                    continue
                if summary is not None:
                    out.append(summary)
        return out

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        """Every run, indexed first if needed, filtered and newest first."""
        with self._lock:
            self.index.refresh()
            summaries = [s for s in self._read_runs(self.index.all_runs()) if run_filter.matches(s)]
        summaries.sort(key=lambda s: s.start_time, reverse=True)
        return summaries[: run_filter.limit] if run_filter.limit is not None else summaries

    @hookimpl
    def mltrack_get_run(self, run_id: str) -> ExperimentSummary | None:
        """The run with exactly this id, or None."""
        with self._lock:
            if run_id not in self.index.all_runs():
                return None
            self.index.refresh([run_id])
            found = self._read_runs([run_id])
        return found[0] if found else None

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's metric sequences as columns (NumPy arrays), sorted by step."""
        with self._lock:
            if run_id not in self.index.all_runs():
                return None
            if self.index.refresh([run_id]):
                # Aim reads a run through its index entry: a stale one has no (or old) points.
                raise BackendError(
                    f"aim backend: run {run_id} could not be read: Aim's run index in "
                    f"{self.settings.repo} could not be brought up to date (a full disk, a read-only "
                    "store or another process holding the index: see the warning logged above); "
                    "free space or fix the store and read again"
                )
            internals.forget_series_snapshot(self.repo, run_id)
            run = Run(run_id, repo=self.repo, read_only=True)
            out = [
                MetricSeries(
                    name=name,
                    # NumPy columns: MetricSeries takes any sequence, and copies would cost.
                    steps=cast(Sequence[int], steps),
                    values=cast(Sequence[float], values),
                    timestamps=cast(Sequence[float], times),
                    context=context,
                )
                for name, context, steps, values, times in internals.iter_metric_columns(
                    self.repo, run, names, fast=self._fast_reads
                )
            ]
            drop_read_snapshots(self.repo, [run_id])
            return out

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts, each pointing at its stored copy."""
        with self._lock:
            if run_id not in self.index.all_runs():
                return None
            self.index.refresh([run_id])
            run = Run(run_id, repo=self.repo, read_only=True)
            meta = _plain_dict(run.get((MLTRACK_KEY, "artifacts"), {}))
            stored = run.artifacts
            out = []
            for name, artifact in stored.items():
                info = _plain_dict(meta.get(name))
                uri = str(artifact.uri)
                path = uri[len("file://") :] if uri.startswith("file://") else uri
                out.append(
                    ModelArtifact(
                        name=name,
                        artifact_type=ArtifactType(info.get("type", ArtifactType.OTHER.value)),
                        file_path=path,
                        metadata=_plain_dict(info.get("metadata")),
                        size=info.get("size"),
                        sha256=info.get("sha256"),
                    )
                )
            return out

    # --- health -------------------------------------------------------------------------

    @hookimpl
    def mltrack_open_ui(self, host: str, port: int | None) -> UiHandle:
        """Start ``aim up`` for this repository (Aim's default port 43800 if free)."""
        if self.settings.is_remote:
            raise BackendError(
                f"Aim's UI reads a repository on disk: run `aim up --repo <path>` on the host of "
                f"{self.settings.repo} (the server's repository)"
            )
        if port is None:
            port = AIM_UI_PORT if port_free(host, AIM_UI_PORT) else None
        ui = start_aim_ui(self.settings.repo, host=host, port=port)
        return UiHandle(url=ui.url, pid=ui.pid, stop=ui.stop)

    @hookimpl
    def mltrack_health(self) -> HealthStatus:
        """Repository reachable and writable, Aim version, index state (and server status)."""
        issues: list[str] = []
        details: dict[str, Any] = {
            "repo": self.settings.repo,
            "aim_version": aim_version(),
            "aim_internals_verified": internals.verified(),
            "batched_writes": batch_path_enabled() and not self.repo.is_remote_repo,
            "artifacts_dir": str(self._artifacts_dir),
            "open_runs": len(self._runs),
        }
        if self.repo.is_remote_repo:
            details["server_reachable"] = http_ok(f"http://{self.settings.server_address}/status/", timeout=3)
            if not details["server_reachable"]:
                issues.append(
                    f"Aim server {self.settings.repo} does not answer: start it with "
                    f"`aim server --repo <path> --port {self.settings.server_address.rsplit(':', 1)[-1]}`"
                )
        else:
            aim_dir = Path(self.repo.path)
            problems = storage_problems(aim_dir.parent, setting=self.settings.source)
            details["writable"] = is_writable(aim_dir)
            details["free_bytes"] = free_bytes(aim_dir)
            issues.extend(problems)
        if not issues:
            try:
                with self._lock:
                    details["index"] = self.index.state()
            except Exception as exc:
                issues.append(f"Aim index unreadable: {type(exc).__name__}: {exc}")
        return HealthStatus(not issues, tuple(issues), backend="aim", details=details)

    def close(self) -> None:
        """Close every run still open here (their data is already stored)."""
        with self._lock:
            for run_id in list(self._runs):
                with contextlib.suppress(Exception):
                    self._release(run_id)
            if self.repo.is_remote_repo:
                # Release the server-side resources now, while the server is surely up,
                # rather than from a garbage-collection finalizer at some later point.
                try:
                    internals.wait_remote(self.repo)  # raises writes the server refused, after the rest
                finally:
                    drop_read_snapshots(self.repo)
                    gc.collect()


EMPTY_KEY = "(empty)"


def _aim_params(value: Any) -> Any:
    """Plain values Aim can store: an empty mapping key (Aim's tree paths reject it) is renamed ``(empty)``."""
    plain = to_plain(value)
    if isinstance(plain, dict):
        return {(k or EMPTY_KEY): _aim_params(v) for k, v in plain.items()}
    if isinstance(plain, list):
        return [_aim_params(v) for v in plain]
    return plain


AIM_UI_PORT = 43800
