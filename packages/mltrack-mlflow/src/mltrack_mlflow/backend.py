"""The ``mlflow`` backend: mltrack's write, read and health hooks over an MLflow tracking store.

Mapping (native MLflow data, so MLflow's UI, ``mlflow.search_runs()`` and ``MlflowClient``
show it as if MLflow had written it; see README.md for the full table):

* experiment -> MLflow experiment (created on demand); run -> MLflow run with the run name,
  ``mltrack.run_id`` tag (MLflow chooses its own run ids), description in ``mlflow.note.content``;
* config -> MLflow params (flattened, dotted keys) plus the exact nested config as JSON in the
  ``mltrack.config`` tag; tags -> ``mltrack.tag.<name>`` tags;
* metrics -> MLflow metrics with step and timestamp, written with ``log_batch``;
* status -> MLflow's RunStatus (COMPLETED=FINISHED, FAILED=FAILED, INTERRUPTED=KILLED,
  CRASHED=FAILED with ``mltrack.status=crashed``), final metrics in ``mltrack.final_metrics``;
* artifacts -> the run's MLflow artifact store, type/size/sha256/metadata in ``mltrack.artifact.*``.

The hooks live here; store access is in :mod:`~mltrack_mlflow.store`, metric writes in
:mod:`~mltrack_mlflow.batch`, read helpers in :mod:`~mltrack_mlflow.reads`, writer liveness in
:mod:`~mltrack_mlflow.crash`, and what reaches past MLflow's public API in
:mod:`~mltrack_mlflow.internals`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
import tempfile
import threading
from array import array
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from mltrack.config import BackendConfig
from mltrack.errors import BackendError, RunNotFoundError
from mltrack.hookspecs import hookimpl
from mltrack.models import (
    MAX_NAME_LENGTH,
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
from mltrack.servers import free_port, http_ok, port_free
from mltrack.storage import free_bytes
from mltrack_mlflow import internals
from mltrack_mlflow import mapping as m
from mltrack_mlflow.batch import metric_points, ms, write_points
from mltrack_mlflow.crash import WRITER, writer_gone
from mltrack_mlflow.internals import sqlalchemy_store_class
from mltrack_mlflow.processes import start_mlflow_ui
from mltrack_mlflow.reads import description, key_names, latest, read_history, sha256, user, utc, walk
from mltrack_mlflow.settings import MlflowSettings, require_store, storage_problems
from mltrack_mlflow.store import SEARCH_PAGE, OpenRun, StoreAccess, run_tags

__all__ = ["MlflowBackend", "sqlalchemy_store_class"]

log = logging.getLogger("mltrack.mlflow")

MLFLOW_UI_PORT = 5000
_SAFE_FILTER_VALUE = re.compile(r"^[^'`\\\"]*$")


def _mlflow_status(status: ExperimentStatus) -> Any:
    """MLflow's RunStatus value of an mltrack status (imports mlflow: writes only)."""
    from mlflow.entities import RunStatus

    return RunStatus.from_string(m.to_mlflow_status(status))


class MlflowBackend:
    """An MLflow tracking store (local SQLite database or ``http://`` server) as an mltrack backend."""

    def __init__(self, settings: MlflowSettings) -> None:
        if settings.must_exist:
            require_store(settings)  # reading a mistyped path must not leave an empty database there
        self.settings = settings
        self._lock = threading.RLock()
        self.access = StoreAccess(settings, self._lock)
        self._open: dict[str, OpenRun] = {}
        self._ids = self.access.ids  # mltrack run id -> MLflow run id
        self._artifacts_dir = Path(settings.artifacts_dir)
        self._bulk_writes: bool | None = None  # decided when the store opens

    @classmethod
    def from_config(cls, config: BackendConfig) -> MlflowBackend:
        """Build the backend from mltrack's backend configuration."""
        return cls(MlflowSettings.from_backend_config(config))

    # --- the store ----------------------------------------------------------------------

    @property
    def store(self) -> Any:
        """MLflow's tracking store, opened on first use (so health works when it cannot open)."""
        return self.access.store

    def _log_tags(self, mlflow_id: str, tags: Mapping[str, str]) -> None:
        self.access.log_tags(mlflow_id, tags)

    def _errors(self, what: str) -> AbstractContextManager[None]:
        """MLflow's exceptions in the block become mltrack's typed errors naming this store."""
        return internals.translate(what, self.settings.tracking_uri)

    def _writable(self, run_id: str) -> OpenRun:
        """The state of a run to write to; a run this backend did not create is resumed."""
        state = self._open.get(run_id)
        if state is not None:
            return state
        run = self.access.find(run_id)
        if run is None:
            raise RunNotFoundError(f"mlflow backend: no run {run_id!r} in {self.settings.tracking_uri}")
        tags = run.data.tags
        config = m.join_json_tags(m.CONFIG_TAG, tags)
        state = OpenRun(
            mlflow_id=run.info.run_id,
            config=config if isinstance(config, dict) else {},
            artifact_uri=run.info.artifact_uri,
            params=set(run.data.params),
            mapped_keys={k for k in run.data.metrics if m.metric_mapping_tag(k) in tags},
        )
        self._open[run_id] = state
        if run.info.status == "RUNNING":  # this process writes it now
            self._log_tags(state.mlflow_id, {m.WRITER_TAG: WRITER})
        return state

    # --- writes -------------------------------------------------------------------------

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        """Create the MLflow run (experiment on demand) with name, config, tags and description."""
        with self._lock, self._errors(f"creating run {run.id}"):
            if run.id in self._open:
                return
            existing = self.access.find(run.id)
            if existing is not None:  # a retried create: carry on with what is stored
                self._writable(run.id)
                return
            experiment_id = self.access.experiment_id(run.experiment_name)
            tags = {m.RUN_ID_TAG: run.id, m.WRITER_TAG: WRITER, "mlflow.user": user()}
            if run.description is not None:
                tags[m.DESCRIPTION_TAG] = run.description[: m.MAX_TAG_VALUE]
                if len(run.description) > m.MAX_TAG_VALUE:  # MLflow's note is cut; the whole one beside it
                    tags.update(m.split_json_tags(m.LONG_DESCRIPTION_TAG, run.description))
            for tag in run.tags:
                tags[m.tag_key(tag)] = tag
            config_tags = m.split_json_tags(m.CONFIG_TAG, run.config)

            if len(config_tags) == 1:  # the common case: everything in one call
                tags.update(config_tags)
                config_tags = {}
            create = partial(
                self.store.create_run,
                user_id=user(),
                start_time=ms(run.start_time),
                tags=run_tags(tags),
                run_name=run.run_name,
            )
            try:
                created = create(experiment_id=experiment_id)
            except Exception as exc:  # the experiment was deleted meanwhile: make it again
                if not internals.mlflow_error(exc):
                    raise
                self.access.experiments.pop(run.experiment_name, None)
                created = create(experiment_id=self.access.experiment_id(run.experiment_name))
            state = OpenRun(
                mlflow_id=created.info.run_id, config=dict(run.config), artifact_uri=created.info.artifact_uri
            )
            self._ids[run.id] = state.mlflow_id
            self._open[run.id] = state
            if config_tags:
                self._log_tags(state.mlflow_id, config_tags)
            self.access.log_params(state, run.config)

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        """Write the batch with ``log_batch``, 1000 points a call; a step repeated in it keeps its last value."""
        with self._lock, self._errors(f"logging metrics of run {run_id}"):
            state = self._writable(run_id)
            points, mapping = metric_points(state, batch)
            if mapping:
                self._log_tags(state.mlflow_id, mapping)
            write_points(self.store, state.mlflow_id, points, bulk=self.bulk_writes)

    @property
    def bulk_writes(self) -> bool:
        """True if points go to SQLite in one statement rather than through ``log_batch``
        (a SQLite store of a verified MLflow; see :func:`internals.bulk_writes`)."""
        if self._bulk_writes is None:
            self._bulk_writes = self.access.is_sqlite and internals.bulk_writes(self.store)
        return self._bulk_writes

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the config tag; keys new to the run become MLflow params too."""
        with self._lock, self._errors(f"logging params of run {run_id}"):
            state = self._writable(run_id)
            plain = {str(k): to_plain(v) for k, v in params.items()}
            state.config.update(plain)
            self._log_tags(state.mlflow_id, m.split_json_tags(m.CONFIG_TAG, state.config))
            # MLflow refuses to change a logged param: a changed value lives in the config tag only.
            self.access.log_params(state, plain)

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add ``mltrack.tag.<name>`` tags."""
        with self._lock, self._errors(f"tagging run {run_id}"):
            state = self._writable(run_id)
            self._log_tags(state.mlflow_id, {m.tag_key(t): t for t in tags})

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Copy the file into the run's MLflow artifact store, metadata into ``mltrack.artifact.*``."""
        with self._lock, self._errors(f"storing artifact {artifact.name!r} of run {run_id}"):
            state = self._writable(run_id)
            repo = self.access.artifact_repo(state.artifact_uri)
            folder, _, file_name = artifact.name.rpartition("/")
            with tempfile.TemporaryDirectory(prefix="mltrack-mlflow-") as tmp:
                # MLflow names the stored file after the local one: give the copy the artifact's name.
                staged = Path(tmp) / file_name
                shutil.copyfile(artifact.file_path, staged)
                repo.log_artifact(str(staged), folder or None)
            info = {
                "name": artifact.name,
                "type": artifact.artifact_type.value,
                "size": artifact.size,
                "sha256": artifact.sha256,
                "metadata": to_plain(artifact.metadata),
            }
            self._log_tags(state.mlflow_id, m.split_json_tags(m.artifact_tag_key(artifact.name), info))

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        """Store final metrics and mltrack's status as tags, then MLflow's status and end time."""
        with self._lock, self._errors(f"finishing run {run_id}"):
            state = self._writable(run_id)
            self._finish(state.mlflow_id, ExperimentStatus(status), end_time, final_metrics)
            self._open.pop(run_id, None)

    def _finish(
        self, mlflow_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        finals = {str(k): float(v) for k, v in final_metrics.items()}
        tags = m.split_json_tags(m.FINAL_METRICS_TAG, finals)
        tags[m.STATUS_TAG] = status.value
        self._log_tags(mlflow_id, tags)
        self.store.update_run_info(mlflow_id, _mlflow_status(status), ms(end_time), None)

    @hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        """Reopen the run in place: MLflow's status RUNNING again, logging goes on into the same run_id.

        This process is recorded as the run's writer, so the run reads CRASHED if it dies too.
        MLflow keeps the earlier end time until the run finishes again; mltrack shows none meanwhile.
        """
        with self._lock, self._errors(f"resuming run {run_id}"):
            state = self._writable(run_id)
            self._log_tags(
                state.mlflow_id, {m.STATUS_TAG: ExperimentStatus.RUNNING.value, m.WRITER_TAG: WRITER}
            )
            self.store.update_run_info(state.mlflow_id, _mlflow_status(ExperimentStatus.RUNNING), None, None)

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run for good: artifacts, then the run (soft-deleted, then purged where the store can)."""
        with self._lock, self._errors(f"deleting run {run_id}"):
            self._open.pop(run_id, None)
            run = self.access.find(run_id)
            if run is None:
                return
            mlflow_id = run.info.run_id
            try:
                self.access.artifact_repo(run.info.artifact_uri).delete_artifacts()
            except Exception as exc:  # nothing stored yet, or a store without delete
                log.debug("mltrack-mlflow: deleting artifacts of %s: %s", run_id, exc)
            self.store.delete_run(mlflow_id)
            internals.hard_delete_run(
                self.store, mlflow_id, self.settings.tracking_uri, remote=self.settings.is_remote
            )
            self._ids.pop(run_id, None)

    # --- reads --------------------------------------------------------------------------

    def _summary(self, run: Any, experiments: Mapping[str, str]) -> ExperimentSummary:
        info, data = run.info, run.data
        tags: dict[str, str] = dict(data.tags)
        mltrack_id = tags.get(m.RUN_ID_TAG)
        run_id = mltrack_id or info.run_id
        status = m.from_mlflow_status(info.status, tags.get(m.STATUS_TAG))
        end = utc(info.end_time)
        if mltrack_id is not None:
            config = m.join_json_tags(m.CONFIG_TAG, tags)
            if not isinstance(config, dict):
                config = {k: m.parse_param(v) for k, v in data.params.items()}
            finals = m.join_json_tags(m.FINAL_METRICS_TAG, tags)
            final_metrics = {str(k): float(v) for k, v in finals.items()} if isinstance(finals, dict) else {}
            run_tags = [v for k, v in tags.items() if k.startswith(m.TAG_PREFIX)]
            if status is ExperimentStatus.RUNNING and run_id not in self._open and writer_gone(tags):
                fresh = self.access.get_run(info.run_id)
                if fresh is not None and _moved_on(tags, fresh):
                    # What was read is older than the writer's end: it finished (or a new writer
                    # resumed) the run before it went. Judge the run as it is now.
                    return self._summary(fresh, experiments)
                now = fresh if fresh is not None else run  # points may have come after `run` was read
                crashed = self._mark_crashed(now)
                status, end, final_metrics = ExperimentStatus.CRASHED, crashed, latest(now)
        else:  # a run MLflow wrote itself
            config = {k: m.parse_param(v) for k, v in data.params.items()}
            final_metrics = {k: m.from_mlflow_value(float(v)) for k, v in data.metrics.items()}
            run_tags = [
                k if v in ("", "true", "True") else f"{k}={v}"
                for k, v in tags.items()
                if not k.startswith(("mlflow.", m.PREFIX))
            ]
        experiment = experiments.get(str(info.experiment_id))
        if experiment is None:
            with contextlib.suppress(Exception):
                experiment = self.access.reads.get_experiment(info.experiment_id).name
        start = utc(info.start_time) or datetime.now(timezone.utc)
        return ExperimentSummary(
            experiment_id=run_id,
            name=info.run_name or experiment or run_id,
            status=status,
            start_time=start,
            end_time=end if status.is_finished else None,
            config=config,
            final_metrics=final_metrics,
            tags=tuple(t for t in run_tags if 0 < len(t) <= MAX_NAME_LENGTH and t.isprintable()),
            experiment_name=experiment,
            description=description(tags),
        )

    def _mark_crashed(self, run: Any) -> datetime:
        """Mark a RUNNING run whose writer process is gone (on this host) CRASHED; return the time."""
        now = datetime.now(timezone.utc)
        try:  # the first reader to notice finishes it in MLflow too, so MLflow's UI agrees
            self._finish(run.info.run_id, ExperimentStatus.CRASHED, now, latest(run))
        except Exception as exc:
            log.debug("mltrack-mlflow: could not mark run %s crashed: %s", run.info.run_id, exc)
        return now

    def _status_filter(self, run_filter: RunFilter) -> str:
        """An MLflow filter string doing what it can of ``run_filter`` in the store."""
        clauses = []
        status = run_filter.status
        # RUNNING and FAILED narrow the search; the runs that read CRASHED are dropped afterwards.
        if status in (
            ExperimentStatus.COMPLETED,
            ExperimentStatus.INTERRUPTED,
            ExperimentStatus.RUNNING,
            ExperimentStatus.FAILED,
        ):
            clauses.append(f"attributes.status = '{m.to_mlflow_status(status)}'")
        for tag in run_filter.tags:
            if _SAFE_FILTER_VALUE.match(tag):
                clauses.append(f"tags.`{m.tag_key(tag)}` = '{tag}'")
        return " AND ".join(clauses)

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        """Every active run matching the filter, newest first (the store filters what it can)."""
        with self._lock, self._errors("listing runs"):
            experiments = self.access.experiment_names()
            filter_string = self._status_filter(run_filter)
            # When the store applies every condition, a page need hold no more than the limit.
            exact = (
                run_filter.name is None
                and run_filter.status in (None, ExperimentStatus.COMPLETED, ExperimentStatus.INTERRUPTED)
                and all(_SAFE_FILTER_VALUE.match(t) for t in run_filter.tags)
            )
            page_size = (
                min(SEARCH_PAGE, max(run_filter.limit, 1)) if exact and run_filter.limit else SEARCH_PAGE
            )
            out = []
            for run in self.access.search(list(experiments), filter_string, page_size):
                summary = self._summary(run, experiments)
                if run_filter.matches(summary):
                    out.append(summary)
                    if run_filter.limit is not None and len(out) >= run_filter.limit:
                        break
        out.sort(key=lambda s: s.start_time, reverse=True)
        return out

    @hookimpl
    def mltrack_get_run(self, run_id: str) -> ExperimentSummary | None:
        """The run with exactly this id, or None."""
        with self._lock, self._errors(f"reading run {run_id}"):
            run = self.access.find(run_id)
            return None if run is None else self._summary(run, {})

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's metric histories, sorted by step, the last write of a step winning."""
        with self._lock, self._errors(f"reading metrics of run {run_id}"):
            run = self.access.find(run_id)
            if run is None:
                return None
            names_of = key_names(run.data.tags)
            wanted = None if names is None else set(names)
            keys = [k for k in run.data.metrics if wanted is None or names_of.get(k, (k, {}))[0] in wanted]
            if not keys:
                return []
            if self.access.is_sqlite and internals.bulk_reads():
                columns = internals.read_points(self.store, run.info.run_id, keys)
            else:
                columns = {k: read_history(self.access.reads, run.info.run_id, k) for k in keys}
            out = []
            for key in keys:
                steps, values, times = columns.get(key, ([], [], []))
                name, context = names_of.get(key, (key, {}))
                out.append(
                    MetricSeries(
                        name=name,
                        steps=array("q", steps),
                        values=array("d", values),
                        timestamps=array("d", times),
                        context=context,
                    )
                )
            return out

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts, each pointing at a local copy (downloaded from a server)."""
        with self._lock, self._errors(f"listing artifacts of run {run_id}"):
            run = self.access.find(run_id)
            if run is None:
                return None
            tags = run.data.tags
            infos = []
            for key in tags:
                rest = key[len(m.ARTIFACT_PREFIX) :]
                if key.startswith(m.ARTIFACT_PREFIX) and "." not in rest:
                    info = m.join_json_tags(key, tags)
                    if isinstance(info, dict) and isinstance(info.get("name"), str):
                        infos.append(info)
            # MLflow's artifact repository (and mlflow with it) only if a file must be fetched.
            repo = functools.cache(partial(self.access.artifact_repo, run.info.artifact_uri))
            if m.RUN_ID_TAG not in tags:  # a run MLflow wrote itself: every file it holds
                infos = [{"name": path} for path in walk(repo())]
            out = []
            for info in sorted(infos, key=lambda i: str(i["name"])):
                path = self._local_copy(repo, run.info.artifact_uri, run_id, info)
                out.append(
                    ModelArtifact(
                        name=info["name"],
                        artifact_type=ArtifactType(info.get("type") or ArtifactType.OTHER.value),
                        file_path=str(path),
                        metadata=info.get("metadata") or {},
                        size=info.get("size"),
                        sha256=info.get("sha256"),
                    )
                )
            return out

    def _local_copy(
        self, repo: Callable[[], Any], artifact_uri: str, run_id: str, info: Mapping[str, Any]
    ) -> Path:
        """A readable local path of a stored artifact: the file itself, or a verified download."""
        name = str(info["name"])
        parsed = urlparse(artifact_uri)
        if parsed.scheme in ("", "file"):
            return Path(url2pathname(parsed.path) if parsed.scheme else artifact_uri) / name
        target_dir = self._artifacts_dir / "downloads" / run_id
        target = target_dir / name
        sha = info.get("sha256")
        if target.is_file() and sha and sha256(target) == sha:
            return target
        target_dir.mkdir(parents=True, exist_ok=True)
        return Path(repo().download_artifacts(name, dst_path=str(target_dir)))

    # --- user interface and health ------------------------------------------------------

    @hookimpl
    def mltrack_open_ui(self, host: str, port: int | None) -> UiHandle:
        """Start MLflow's UI (``mlflow server``) on this store (port 5000 if free)."""
        if self.settings.is_remote:
            raise BackendError(
                f"MLflow's UI is served by the tracking server itself: open {self.settings.tracking_uri}"
            )
        self.store  # noqa: B018  (creates the database if it does not exist yet)
        if port is None:
            port = MLFLOW_UI_PORT if port_free(host, MLFLOW_UI_PORT) else free_port(host)
        ui = start_mlflow_ui(self.settings.tracking_uri, self._artifacts_dir, host=host, port=port)
        return UiHandle(url=ui.url, pid=ui.pid, stop=ui.stop)

    @hookimpl
    def mltrack_health(self) -> HealthStatus:
        """Store reachable and writable, MLflow version, tracking URI; never raises."""
        issues: list[str] = []
        uri = self.settings.tracking_uri
        details: dict[str, Any] = {
            "tracking_uri": uri,
            "mlflow_version": internals.mlflow_version(),
            "mlflow_internals_verified": internals.verified(),
            "artifacts_dir": str(self._artifacts_dir),
            "open_runs": len(self._open),
        }
        try:
            if self.settings.is_remote:
                details["server_reachable"] = http_ok(uri + "/health", timeout=3.0)
                details["writable"] = details["server_reachable"]
                if not details["server_reachable"]:
                    issues.append(
                        f"MLflow server {uri} does not answer: start it (`mlflow server --host "
                        f"127.0.0.1 --port {uri.rsplit(':', 1)[-1]}`) or fix MLFLOW_TRACKING_URI"
                    )
            else:
                db_path = self.settings.db_path
                if db_path is not None:
                    details["db_path"] = str(db_path)
                    details["free_bytes"] = free_bytes(db_path.parent)
                    problems = storage_problems(db_path, setting=self.settings.source)
                    details["writable"] = not any("writable" in p or "read-only" in p for p in problems)
                    issues.extend(problems)
            if not issues:
                with self._lock:
                    details["experiments"] = len(self.access.experiment_names())
        except Exception as exc:
            issues.append(f"MLflow store {uri} unusable: {type(exc).__name__}: {exc}")
        return HealthStatus(not issues, tuple(issues), backend="mlflow", details=details)

    def close(self) -> None:
        """Forget open runs; their data is already stored (an unfinished run stays RUNNING)."""
        with self._lock:
            self._open.clear()


def _moved_on(tags: Mapping[str, str], fresh: Any) -> bool:
    """Whether a run read again is no longer the RUNNING run of the writer ``tags`` name."""
    now = dict(fresh.data.tags)
    return (
        fresh.info.status != "RUNNING"
        or now.get(m.STATUS_TAG) != tags.get(m.STATUS_TAG)
        or now.get(m.WRITER_TAG) != tags.get(m.WRITER_TAG)
    )
