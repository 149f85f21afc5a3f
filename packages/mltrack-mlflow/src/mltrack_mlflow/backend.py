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
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import warnings
from array import array
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import attrs
from mlflow.entities import ExperimentTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.version import VERSION as MLFLOW_VERSION

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
from mltrack.settings import env
from mltrack.storage import free_bytes
from mltrack.tracker import final_metric_key
from mltrack_mlflow import mapping as m
from mltrack_mlflow.processes import start_mlflow_ui
from mltrack_mlflow.settings import MlflowSettings, require_store, storage_problems

__all__ = ["MlflowBackend"]

log = logging.getLogger("mltrack.mlflow")

MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_CALL = 100
MAX_TAGS_PER_CALL = 20  # 100 is MLflow's limit; 20 long tags keep a REST request far under its 1 MB
SEARCH_PAGE = 1000
MLFLOW_UI_PORT = 5000
_HEX_ID = re.compile(r"^[0-9a-f]{1,64}$")
_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_SAFE_FILTER_VALUE = re.compile(r"^[^'`\\\"]*$")


def _ms(moment: datetime | float) -> int:
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return round(seconds * 1000)


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, timezone.utc)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _process_ticks(pid: int) -> str:
    """The process's start time in clock ticks (Linux), so a reused pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _process_alive(pid: int, ticks: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the pid exists, which is all we can tell
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest and rest[0] in ("Z", "X"):
        return False  # a zombie wrote its last
    return not ticks or len(rest) <= 19 or rest[19] == ticks


_HOST = socket.gethostname()
_WRITER = f"{_HOST} {os.getpid()} {_process_ticks(os.getpid())}"


@attrs.define
class _OpenRun:
    """What this backend knows of a run it writes: MLflow id, config, keys already mapped."""

    mlflow_id: str
    config: dict[str, Any]
    artifact_uri: str
    params: set[str] = attrs.field(factory=set)
    mapped_keys: set[str] = attrs.field(factory=set)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into mltrack's typed errors, saying what failed."""
    try:
        yield
    except (BackendError, RunNotFoundError):
        raise
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFoundError(f"mlflow backend: {what}: {exc.message}") from exc
        raise BackendError(f"mlflow backend: {what}: {exc.message}") from exc
    except Exception as exc:
        raise BackendError(f"mlflow backend: {what}: {type(exc).__name__}: {exc}") from exc


class MlflowBackend:
    """An MLflow tracking store (local SQLite database or ``http://`` server) as an mltrack backend."""

    def __init__(self, settings: MlflowSettings) -> None:
        if settings.must_exist:
            require_store(settings)  # reading a mistyped path must not leave an empty database there
        self.settings = settings
        self._lock = threading.RLock()
        self._store_obj: Any = None
        self._open: dict[str, _OpenRun] = {}
        self._ids: dict[str, str] = {}  # mltrack run id -> MLflow run id
        self._experiments: dict[str, str] = {}  # experiment name -> MLflow experiment id
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
        with self._lock:
            if self._store_obj is None:
                with _errors(f"cannot open the tracking store {self.settings.tracking_uri}"):
                    self._store_obj = self._open_store()
            return self._store_obj

    def _open_store(self) -> Any:
        uri = self.settings.tracking_uri
        if self.settings.is_remote:
            from mlflow.store.tracking.rest_store import RestStore
            from mlflow.utils.credentials import get_default_host_creds

            rest_store: Any = RestStore  # MLflow's stores are untyped
            return rest_store(partial(get_default_host_creds, uri))
        if uri.startswith("file:"):
            from mlflow.store.tracking.file_store import FileStore

            file_store: Any = FileStore
            return file_store(uri, self._artifacts_dir.as_uri())
        SqlAlchemyStore = sqlalchemy_store_class()
        db_path = self.settings.db_path
        if db_path is None:
            return SqlAlchemyStore(uri, self._artifacts_dir.as_uri())
        db_path.parent.mkdir(parents=True, exist_ok=True)
        # Creating a database runs MLflow's migrations; two processes doing it at once collide.
        lock_path = db_path.parent / f".{db_path.name}.mltrack-lock"
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return SqlAlchemyStore(uri, self._artifacts_dir.as_uri())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def _is_sqlite(self) -> bool:
        return self.settings.db_path is not None or self.settings.tracking_uri.startswith("sqlite:")

    def _experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (or restored, if deleted) on demand."""
        cached = self._experiments.get(name)
        if cached is not None:
            return cached
        store = self.store
        with _errors(f"experiment {name!r}"):
            experiment = store.get_experiment_by_name(name)
            if experiment is None:
                try:
                    # MLflow's UI opens an experiment of this kind on its runs table and charts.
                    kind = ExperimentTag(m.EXPERIMENT_KIND_TAG, m.EXPERIMENT_KIND)
                    experiment_id = str(store.create_experiment(name, None, [kind]))
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    experiment = store.get_experiment_by_name(name)  # another process made it
                    if experiment is None:
                        raise
                    experiment_id = str(experiment.experiment_id)
            else:
                experiment_id = str(experiment.experiment_id)
                if experiment.lifecycle_stage == "deleted":
                    store.restore_experiment(experiment_id)
        self._experiments[name] = experiment_id
        return experiment_id

    def _experiment_names(self) -> dict[str, str]:
        """Every active experiment, id -> name."""
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.store.search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=SEARCH_PAGE, page_token=token
            )
            for experiment in page:
                out[str(experiment.experiment_id)] = experiment.name
            token = page.token
            if not token:
                return out

    def _search(
        self, experiment_ids: list[str], filter_string: str, page_size: int = SEARCH_PAGE
    ) -> Iterator[Any]:
        """Active runs of these experiments matching ``filter_string``, newest first, page by page."""
        if not experiment_ids:
            return
        token = None
        while True:
            page = self.store.search_runs(
                experiment_ids,
                filter_string,
                ViewType.ACTIVE_ONLY,
                max_results=page_size,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def _find(self, run_id: str) -> Any | None:
        """The active MLflow run of mltrack run ``run_id`` (or of MLflow run id ``run_id``), or None."""
        if not _HEX_ID.match(run_id):
            return None
        store = self.store
        cached = self._ids.get(run_id)
        if cached is not None:
            try:
                run = store.get_run(cached)
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                return run
            self._ids.pop(run_id, None)
        filter_string = f"tags.`{m.RUN_ID_TAG}` = '{run_id}'"
        for run in self._search(list(self._experiment_names()), filter_string, page_size=2):
            self._ids[run_id] = run.info.run_id
            return run
        if _MLFLOW_RUN_ID.match(run_id):  # a run MLflow wrote itself: its own id
            try:
                run = store.get_run(run_id)
            except MlflowException:
                return None
            if run.info.lifecycle_stage == "active" and m.RUN_ID_TAG not in run.data.tags:
                return run
        return None

    def _writable(self, run_id: str) -> _OpenRun:
        """The state of a run to write to; a run this backend did not create is resumed."""
        state = self._open.get(run_id)
        if state is not None:
            return state
        run = self._find(run_id)
        if run is None:
            raise RunNotFoundError(f"mlflow backend: no run {run_id!r} in {self.settings.tracking_uri}")
        tags = run.data.tags
        config = m.join_json_tags(m.CONFIG_TAG, tags)
        state = _OpenRun(
            mlflow_id=run.info.run_id,
            config=config if isinstance(config, dict) else {},
            artifact_uri=run.info.artifact_uri,
            params=set(run.data.params),
            mapped_keys={k for k in run.data.metrics if m.metric_mapping_tag(k) in tags},
        )
        self._open[run_id] = state
        if run.info.status == "RUNNING":  # this process writes it now
            self._log_tags(state.mlflow_id, {m.WRITER_TAG: _WRITER})
        return state

    def _log_tags(self, mlflow_id: str, tags: Mapping[str, str]) -> None:
        items = [RunTag(k, v) for k, v in tags.items()]
        # A split value's marker comes last in ``tags``: its parts are stored before it.
        for chunk in _chunks(items, MAX_TAGS_PER_CALL):
            self.store.log_batch(mlflow_id, metrics=[], params=[], tags=list(chunk))

    def _log_params(self, state: _OpenRun, config: Mapping[str, Any]) -> None:
        new = [Param(k, v) for k, v in m.flatten_params(config).items() if k not in state.params]
        for chunk in _chunks(new, MAX_PARAMS_PER_CALL):
            self.store.log_batch(state.mlflow_id, metrics=[], params=list(chunk), tags=[])
        state.params.update(p.key for p in new)

    # --- writes -------------------------------------------------------------------------

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        """Create the MLflow run (experiment on demand) with name, config, tags and description."""
        with self._lock, _errors(f"creating run {run.id}"):
            if run.id in self._open:
                return
            existing = self._find(run.id)
            if existing is not None:  # a retried create: carry on with what is stored
                self._writable(run.id)
                return
            experiment_id = self._experiment_id(run.experiment_name)
            tags = {m.RUN_ID_TAG: run.id, m.WRITER_TAG: _WRITER, "mlflow.user": _user()}
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
                user_id=_user(),
                start_time=_ms(run.start_time),
                tags=[RunTag(k, v) for k, v in tags.items()],
                run_name=run.run_name,
            )
            try:
                created = create(experiment_id=experiment_id)
            except MlflowException:  # the experiment was deleted meanwhile: make it again
                self._experiments.pop(run.experiment_name, None)
                created = create(experiment_id=self._experiment_id(run.experiment_name))
            state = _OpenRun(
                mlflow_id=created.info.run_id, config=dict(run.config), artifact_uri=created.info.artifact_uri
            )
            self._ids[run.id] = state.mlflow_id
            self._open[run.id] = state
            if config_tags:
                self._log_tags(state.mlflow_id, config_tags)
            self._log_params(state, run.config)

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        """Write the batch with ``log_batch``, 1000 points a call; a step repeated in it keeps its last value."""
        with self._lock, _errors(f"logging metrics of run {run_id}"):
            state = self._writable(run_id)
            points: list[tuple[str, float, int, int]] = []  # key, value, timestamp (ms), step
            mapping: dict[str, str] = {}
            for name, context, steps, values, timestamps in batch.groups():
                key = m.metric_key(name, context)
                if key != name and key not in state.mapped_keys:
                    mapping[m.metric_mapping_tag(key)] = json.dumps(
                        {"key": key, "name": name, "context": to_plain(context)}, ensure_ascii=False
                    )
                    state.mapped_keys.add(key)
                s_col, v_col, t_col = m.last_per_step(steps, values, timestamps)
                points.extend((key, v, _ms(t), s) for s, v, t in zip(s_col, v_col, t_col))
            if mapping:
                self._log_tags(state.mlflow_id, mapping)
            if self.bulk_writes:
                self._insert_points(state.mlflow_id, points)
                return
            for chunk in _chunks(points, MAX_METRICS_PER_CALL):
                metrics = [Metric(key, value, ts, step) for key, value, ts, step in chunk]
                self.store.log_batch(state.mlflow_id, metrics=metrics, params=[], tags=[])

    @property
    def bulk_writes(self) -> bool:
        """True if points go to SQLite in one statement rather than through ``log_batch``.

        MLflow's ``log_batch`` builds an ORM object per point (about 100 us each); the bulk
        path writes the same rows to the same tables, with the same latest-value rule, in one
        transaction. It relies on MLflow's table layout, so it is on only for SQLite stores
        of MLflow 3 whose tables have the expected columns; ``MLTRACK_MLFLOW_BATCH=0`` turns it off.
        """
        if self._bulk_writes is None:
            self._bulk_writes = False
            if self._is_sqlite and MLFLOW_VERSION.startswith("3.") and env("MLTRACK_MLFLOW_BATCH"):
                try:
                    self._bulk_writes = _expected_tables(self.store.engine)
                except Exception as exc:
                    log.info("mltrack-mlflow: bulk writes off: %s", exc)
        return self._bulk_writes

    def _insert_points(self, mlflow_id: str, points: Sequence[tuple[str, float, int, int]]) -> None:
        """Insert points as MLflow's SQL store does (NaN and infinities alike), in one transaction."""
        import sqlalchemy

        rows = []
        latest: dict[str, dict[str, Any]] = {}
        for key, value, ts, step in points:
            is_nan = math.isnan(value)
            stored = 0.0 if is_nan else max(-m.FLOAT_MAX, min(m.FLOAT_MAX, value))
            row = {"key": key, "value": stored, "ts": ts, "run": mlflow_id, "step": step, "nan": is_nan}
            rows.append(row)
            best = latest.get(key)
            # MLflow's rule: the latest value is the greatest (step, timestamp, value).
            if best is None or (step, ts, stored) > (best["step"], best["ts"], best["value"]):
                latest[key] = row
        if not rows:
            return
        with self.store.engine.begin() as conn:
            stage = conn.execute(_run_stage_query(), {"run": mlflow_id}).scalar()
            if stage is None:
                raise RunNotFoundError(f"mlflow backend: no MLflow run {mlflow_id!r}")
            if stage != "active":
                raise BackendError(f"mlflow backend: MLflow run {mlflow_id} is deleted; it takes no metrics")
            conn.execute(sqlalchemy.text(_INSERT_METRICS), rows)
            conn.execute(sqlalchemy.text(_UPSERT_LATEST), list(latest.values()))

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the config tag; keys new to the run become MLflow params too."""
        with self._lock, _errors(f"logging params of run {run_id}"):
            state = self._writable(run_id)
            plain = {str(k): to_plain(v) for k, v in params.items()}
            state.config.update(plain)
            self._log_tags(state.mlflow_id, m.split_json_tags(m.CONFIG_TAG, state.config))
            # MLflow refuses to change a logged param: a changed value lives in the config tag only.
            self._log_params(state, plain)

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add ``mltrack.tag.<name>`` tags."""
        with self._lock, _errors(f"tagging run {run_id}"):
            state = self._writable(run_id)
            self._log_tags(state.mlflow_id, {m.tag_key(t): t for t in tags})

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Copy the file into the run's MLflow artifact store, metadata into ``mltrack.artifact.*``."""
        with self._lock, _errors(f"storing artifact {artifact.name!r} of run {run_id}"):
            state = self._writable(run_id)
            repo = self._artifact_repo(state.artifact_uri)
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
        with self._lock, _errors(f"finishing run {run_id}"):
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
        self.store.update_run_info(
            mlflow_id, RunStatus.from_string(m.to_mlflow_status(status)), _ms(end_time), None
        )

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run for good: artifacts, then the run (soft-deleted, then purged where the store can)."""
        with self._lock, _errors(f"deleting run {run_id}"):
            self._open.pop(run_id, None)
            run = self._find(run_id)
            if run is None:
                return
            mlflow_id = run.info.run_id
            try:
                self._artifact_repo(run.info.artifact_uri).delete_artifacts()
            except Exception as exc:  # nothing stored yet, or a store without delete
                log.debug("mltrack-mlflow: deleting artifacts of %s: %s", run_id, exc)
            self.store.delete_run(mlflow_id)
            hard_delete = getattr(self.store, "_hard_delete_run", None)
            if callable(hard_delete):  # what `mlflow gc` does; a server only soft-deletes
                hard_delete(mlflow_id)
            self._ids.pop(run_id, None)

    # --- reads --------------------------------------------------------------------------

    def _summary(self, run: Any, experiments: Mapping[str, str]) -> ExperimentSummary:
        info, data = run.info, run.data
        tags: dict[str, str] = dict(data.tags)
        mltrack_id = tags.get(m.RUN_ID_TAG)
        run_id = mltrack_id or info.run_id
        status = m.from_mlflow_status(info.status, tags.get(m.STATUS_TAG))
        end = _utc(info.end_time)
        if mltrack_id is not None:
            config = m.join_json_tags(m.CONFIG_TAG, tags)
            if not isinstance(config, dict):
                config = {k: m.parse_param(v) for k, v in data.params.items()}
            finals = m.join_json_tags(m.FINAL_METRICS_TAG, tags)
            final_metrics = {str(k): float(v) for k, v in finals.items()} if isinstance(finals, dict) else {}
            run_tags = [v for k, v in tags.items() if k.startswith(m.TAG_PREFIX)]
            if status is ExperimentStatus.RUNNING and run_id not in self._open:
                crashed = self._check_crashed(run, tags)
                if crashed is not None:
                    status, end, final_metrics = ExperimentStatus.CRASHED, crashed, self._latest(run)
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
                experiment = self.store.get_experiment(info.experiment_id).name
        start = _utc(info.start_time) or datetime.now(timezone.utc)
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
            description=_description(tags),
        )

    def _latest(self, run: Any) -> dict[str, float]:
        """MLflow's latest value of each metric, named as mltrack names final metrics."""
        names = _key_names(run.data.tags)
        out: dict[str, float] = {}
        for key, value in run.data.metrics.items():
            name, context = names.get(key, (key, {}))
            out[final_metric_key(name, tuple(sorted(context.items())))] = m.from_mlflow_value(float(value))
        return out

    def _check_crashed(self, run: Any, tags: Mapping[str, str]) -> datetime | None:
        """If the run's writer process is gone (on this host), mark it CRASHED and return the time."""
        writer = tags.get(m.WRITER_TAG, "").split()
        if len(writer) < 2 or writer[0] != _HOST or not writer[1].isdigit():
            return None  # written elsewhere: this host cannot tell whether its writer lives
        if _process_alive(int(writer[1]), writer[2] if len(writer) > 2 else ""):
            return None
        now = datetime.now(timezone.utc)
        try:  # the first reader to notice finishes it in MLflow too, so MLflow's UI agrees
            self._finish(run.info.run_id, ExperimentStatus.CRASHED, now, self._latest(run))
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
        with self._lock, _errors("listing runs"):
            experiments = self._experiment_names()
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
            for run in self._search(list(experiments), filter_string, page_size):
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
        with self._lock, _errors(f"reading run {run_id}"):
            run = self._find(run_id)
            return None if run is None else self._summary(run, {})

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's metric histories, sorted by step, the last write of a step winning."""
        with self._lock, _errors(f"reading metrics of run {run_id}"):
            run = self._find(run_id)
            if run is None:
                return None
            key_names = _key_names(run.data.tags)
            wanted = None if names is None else set(names)
            keys = [k for k in run.data.metrics if wanted is None or key_names.get(k, (k, {}))[0] in wanted]
            if not keys:
                return []
            if self._is_sqlite:
                columns = self._read_sqlite(run.info.run_id, keys)
            else:
                columns = {k: self._read_history(run.info.run_id, k) for k in keys}
            out = []
            for key in keys:
                steps, values, times = columns.get(key, ([], [], []))
                name, context = key_names.get(key, (key, {}))
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

    def _read_sqlite(
        self, mlflow_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[list[int], list[float], list[float]]]:
        """Bulk read of a run's points in one query, in insertion order within each step."""
        import sqlalchemy

        query = sqlalchemy.text(
            "SELECT key, step, value, is_nan, timestamp FROM metrics WHERE run_uuid = :run "
            "ORDER BY key, step, rowid"
        )
        wanted = set(keys)
        out: dict[str, tuple[list[int], list[float], list[float]]] = {}
        current: tuple[list[int], list[float], list[float]] | None = None
        current_key = None
        with self.store.engine.connect() as conn:
            for key, step, value, is_nan, ts in conn.execute(query, {"run": mlflow_id}):
                if key != current_key:
                    current_key = key
                    current = out.setdefault(key, ([], [], [])) if key in wanted else None
                if current is None:
                    continue
                value = math.nan if is_nan else m.from_mlflow_value(float(value))
                if current[0] and current[0][-1] == step:  # a later write of the same step wins
                    current[1][-1] = value
                    current[2][-1] = ts / 1000.0
                else:
                    current[0].append(int(step))
                    current[1].append(value)
                    current[2].append(ts / 1000.0)
        return out

    def _read_history(self, mlflow_id: str, key: str) -> tuple[list[int], list[float], list[float]]:
        """One metric's history through the store's API (servers and non-SQLite databases)."""
        points: list[Any] = []
        token = None
        while True:
            page = self.store.get_metric_history(mlflow_id, key, page_token=token)
            points.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
        points.sort(key=lambda p: (p.step, p.timestamp))  # stable: equal times keep the store's order
        steps = [int(p.step) for p in points]
        values = [math.nan if math.isnan(p.value) else m.from_mlflow_value(float(p.value)) for p in points]
        times = [p.timestamp / 1000.0 for p in points]
        return m.last_per_step(steps, values, times)

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts, each pointing at a local copy (downloaded from a server)."""
        with self._lock, _errors(f"listing artifacts of run {run_id}"):
            run = self._find(run_id)
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
            repo = self._artifact_repo(run.info.artifact_uri)
            if m.RUN_ID_TAG not in tags:  # a run MLflow wrote itself: every file it holds
                infos = [{"name": path} for path in _walk(repo)]
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

    def _artifact_repo(self, artifact_uri: str) -> Any:
        return get_artifact_repository(artifact_uri, tracking_uri=self.settings.tracking_uri)

    def _local_copy(self, repo: Any, artifact_uri: str, run_id: str, info: Mapping[str, Any]) -> Path:
        """A readable local path of a stored artifact: the file itself, or a verified download."""
        name = str(info["name"])
        parsed = urlparse(artifact_uri)
        if parsed.scheme in ("", "file"):
            return Path(url2pathname(parsed.path) if parsed.scheme else artifact_uri) / name
        target_dir = self._artifacts_dir / "downloads" / run_id
        target = target_dir / name
        sha = info.get("sha256")
        if target.is_file() and sha and _sha256(target) == sha:
            return target
        target_dir.mkdir(parents=True, exist_ok=True)
        return Path(repo.download_artifacts(name, dst_path=str(target_dir)))

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
            "mlflow_version": MLFLOW_VERSION,
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
                    details["experiments"] = len(self._experiment_names())
        except Exception as exc:
            issues.append(f"MLflow store {uri} unusable: {type(exc).__name__}: {exc}")
        return HealthStatus(not issues, tuple(issues), backend="mlflow", details=details)

    def close(self) -> None:
        """Forget open runs; their data is already stored (an unfinished run stays RUNNING)."""
        with self._lock:
            self._open.clear()


# --- helpers --------------------------------------------------------------------------------

_METRICS_COLUMNS = {"key", "value", "timestamp", "run_uuid", "step", "is_nan"}
_LATEST_COLUMNS = {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}
# A point already stored (same key, time, step and value) is skipped, as MLflow does.
_INSERT_METRICS = (
    "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
    "VALUES (:key, :value, :ts, :run, :step, :nan)"
)
_UPSERT_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
    "VALUES (:key, :value, :ts, :step, :nan, :run) "
    "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, "
    "step = excluded.step, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
    "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)


def _run_stage_query() -> Any:
    import sqlalchemy

    return sqlalchemy.text("SELECT lifecycle_stage FROM runs WHERE run_uuid = :run")


def _expected_tables(engine: Any) -> bool:
    """True if MLflow's ``metrics`` and ``latest_metrics`` tables have the columns the bulk path writes."""
    import sqlalchemy

    with engine.connect() as conn:
        found = {
            table: {row[1] for row in conn.execute(sqlalchemy.text(f"PRAGMA table_info({table})"))}
            for table in ("metrics", "latest_metrics")
        }
    return found["metrics"] == _METRICS_COLUMNS and found["latest_metrics"] == _LATEST_COLUMNS


def sqlalchemy_store_class() -> Any:
    """MLflow's SQL store class, imported without the SQLAlchemy deprecation warning it triggers."""
    with warnings.catch_warnings():
        # MLflow's models use a loader strategy SQLAlchemy 2.1 deprecates; nothing mltrack can act on.
        warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore


def _description(tags: Mapping[str, str]) -> str | None:
    whole = m.join_json_tags(m.LONG_DESCRIPTION_TAG, tags)
    return whole if isinstance(whole, str) else tags.get(m.DESCRIPTION_TAG)


def _key_names(tags: Mapping[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Encoded MLflow metric keys -> (mltrack name, context), from the ``mltrack.metric.*`` tags."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, value in tags.items():
        if not key.startswith(m.METRIC_PREFIX):
            continue
        try:
            info = json.loads(value)
        except ValueError:
            continue
        if isinstance(info, dict) and isinstance(info.get("key"), str) and isinstance(info.get("name"), str):
            context = info.get("context")
            out[info["key"]] = (info["name"], context if isinstance(context, dict) else {})
    return out


def _walk(repo: Any, path: str | None = None) -> list[str]:
    out: list[str] = []
    for entry in repo.list_artifacts(path):
        if entry.is_dir:
            out.extend(_walk(repo, entry.path))
        else:
            out.append(entry.path)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
