"""The ``tensorboard`` backend: mltrack's write, read and health hooks over TensorBoard event files.

Layout and mapping (TensorBoard shows it as if a ``SummaryWriter`` had written it):

* run -> folder ``<logdir>/<experiment>/<run name>-<run id>``, the TensorBoard run;
* metrics -> scalar events (step, wall time, float64 value) in ``events.out.tfevents.*`` files,
  one file per writing process; a metric logged in a context is the tag ``name{key=value,...}``;
* config -> the HParams tab: ``_hparams_/session_start_info`` in the run's own folder (never a
  per-run ``_hparams_/experiment``: TensorBoard takes the first it meets and other runs lose their
  columns), status -> ``_hparams_/session_end_info``;
* description and tags -> the Text tab; artifacts -> files under ``<run folder>/artifacts``;
* what mltrack reads back exactly (config, tags, status, final metrics, artifact metadata, the
  name and context of each tag) -> JSON records under the plugin name ``mltrack``, kept in a
  small ``*.mltrack`` event file of their own so listing runs never reads the scalars.

Every read comes from the event files alone; folders TensorBoard wrote itself (an SB3
``tensorboard_log=`` folder, a plain ``SummaryWriter``) read as runs too, with their scalars,
hyperparameters and times.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import attrs
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import plugin_data_pb2 as plugin_hparams_pb2
from tensorboard.version import VERSION as TENSORBOARD_VERSION

from mltrack.authoring import WriterRecord
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
from mltrack.servers import free_port, port_free
from mltrack.storage import free_bytes
from mltrack.tracker import final_metric_key
from mltrack_tensorboard import records as rec
from mltrack_tensorboard.processes import start_tensorboard
from mltrack_tensorboard.settings import TensorboardSettings, require_logdir, storage_problems

__all__ = ["TensorboardBackend", "read_scalars"]

log = logging.getLogger("mltrack.tensorboard")

TENSORBOARD_PORT = 6006
META_SUFFIX = ".mltrack"
ARTIFACTS = "artifacts"
HPARAMS_PLUGIN = "hparams"
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"
_HEX_ID = re.compile(r"^[0-9a-f]{1,64}$")
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_HPARAMS_STATUS = {
    ExperimentStatus.COMPLETED: "STATUS_SUCCESS",
    ExperimentStatus.FAILED: "STATUS_FAILURE",
    ExperimentStatus.CRASHED: "STATUS_FAILURE",
    ExperimentStatus.INTERRUPTED: "STATUS_UNKNOWN",
    ExperimentStatus.RUNNING: "STATUS_RUNNING",
}

_HOST = socket.gethostname()


# --- names and files ----------------------------------------------------------------------


def _safe(name: str, limit: int = 150) -> str:
    """A folder name for ``name``: no separators or control characters, at most ``limit`` bytes."""
    cleaned = _UNSAFE.sub("_", name).strip() or "_"
    if cleaned in (".", ".."):
        cleaned = "_"
    encoded = cleaned.encode("utf-8")[:limit]
    return encoded.decode("utf-8", errors="ignore") or "_"


def _events_name(suffix: str = "") -> str:
    """A new event file's name, sorting after every earlier one of this run (time to the microsecond)."""
    now = time.time_ns() // 1000
    return f"events.out.tfevents.{now // 1_000_000}.{now % 1_000_000:06d}.{_HOST}.{os.getpid()}{suffix}"


def _is_events(name: str) -> bool:
    return "tfevents" in name


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def _from_iso(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys, for the HParams tab (which holds numbers, text and booleans)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _hparams_value(value: Any) -> Any:
    """An hparams ``google.protobuf.Value`` of ``value`` (lists and None as their JSON text)."""
    from google.protobuf import struct_pb2

    out = struct_pb2.Value()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        out.number_value = float(value)
    elif isinstance(value, str):
        out.string_value = value
    else:
        out.string_value = json.dumps(value, ensure_ascii=False)
    return out


def _hparams_summary(tag: str, data: Any) -> Any:
    plugin = summary_pb2.SummaryMetadata.PluginData(
        plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString()
    )
    return summary_pb2.Summary.Value(tag=tag, metadata=summary_pb2.SummaryMetadata(plugin_data=plugin))


def _session_start(config: Mapping[str, Any], start: datetime) -> Any:
    """The HParams tab's session start of a run. No group name: TensorBoard then groups runs by
    their hyperparameters (one group per run would hide that; one per experiment mixes them)."""
    info = plugin_hparams_pb2.SessionStartInfo(start_time_secs=start.timestamp())
    for key, value in _flatten(config).items():
        info.hparams[key].CopyFrom(_hparams_value(value))
    return _hparams_summary(SESSION_START_TAG, plugin_hparams_pb2.HParamsPluginData(session_start_info=info))


def _session_end(status: ExperimentStatus, end: datetime) -> Any:
    info = plugin_hparams_pb2.SessionEndInfo(
        status=api_pb2.Status.Value(_HPARAMS_STATUS[status]), end_time_secs=end.timestamp()
    )
    return _hparams_summary(SESSION_END_TAG, plugin_hparams_pb2.HParamsPluginData(session_end_info=info))


def _metric_tag(name: str, context: Mapping[str, Any]) -> str:
    """The TensorBoard tag of a metric: its name, with its context as ``{key=value,...}``."""
    return final_metric_key(name, tuple(sorted(context.items())))


# --- reading ---------------------------------------------------------------------------------


@attrs.define
class _Meta:
    """What the ``mltrack`` JSON records (or, for a foreign run, the events) of a run say."""

    run_id: str
    folder: Path
    experiment: str
    name: str
    start: datetime
    mltrack: bool = True
    config: dict[str, Any] = attrs.field(factory=dict)
    tags: list[str] = attrs.field(factory=list)
    description: str | None = None
    status: ExperimentStatus = ExperimentStatus.RUNNING
    end: datetime | None = None
    final_metrics: dict[str, float] = attrs.field(factory=dict)
    writer: str = ""
    metrics: dict[str, tuple[str, dict[str, Any]]] = attrs.field(factory=dict)
    artifacts: dict[str, dict[str, Any]] = attrs.field(factory=dict)


def _json_records(path: Path) -> Iterator[tuple[str, Any, float]]:
    """``(tag, value, wall time)`` of each value of an ``mltrack`` meta event file."""
    for event in rec.decode_events(path):
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == rec.JSON_PLUGIN and value.tensor.string_val:
                try:
                    yield value.tag, json.loads(value.tensor.string_val[0]), event.wall_time
                except ValueError:
                    continue


def _read_meta(folder: Path, files: Sequence[Path]) -> _Meta | None:
    """A mltrack run's state from its meta event files, applied in file order (later wins)."""
    meta: _Meta | None = None
    for path in files:
        for tag, value, _wall in _json_records(path):
            if not isinstance(value, dict):
                continue
            if tag == "mltrack/run":
                start = _from_iso(value.get("start_time")) or datetime.now(timezone.utc)
                meta = _Meta(
                    run_id=str(value.get("id")),
                    folder=folder,
                    experiment=str(value.get("experiment")),
                    name=str(value.get("name")),
                    start=start,
                    config=dict(value.get("config") or {}),
                    tags=list(value.get("tags") or []),
                    description=value.get("description"),
                    writer=str(value.get("writer") or ""),
                )
                continue
            if meta is None:
                continue
            if tag == "mltrack/config":
                meta.config = dict(value.get("config") or {})
            elif tag == "mltrack/tags":
                meta.tags = list(value.get("tags") or [])
            elif tag == "mltrack/writer":
                meta.writer = str(value.get("writer") or "")
            elif tag == "mltrack/metric":
                context = value.get("context")
                meta.metrics[str(value.get("tag"))] = (
                    str(value.get("name")),
                    context if isinstance(context, dict) else {},
                )
            elif tag == "mltrack/artifact":
                if isinstance(value.get("name"), str):
                    meta.artifacts[value["name"]] = value
            elif tag == "mltrack/status":
                with contextlib.suppress(ValueError):
                    meta.status = ExperimentStatus(value.get("status"))
                meta.end = _from_iso(value.get("end_time"))
                finals = value.get("final_metrics") or {}
                meta.final_metrics = {str(k): float(v) for k, v in finals.items()}
    return meta


def read_scalars(files: Sequence[Path]) -> dict[str, tuple[array[int], array[float], array[float]]]:
    """Every scalar series in these event files (in order): tag -> (steps, values, wall times).

    Sorted by step; a step written again keeps the value written last, the way mltrack defines
    a repeated step (TensorBoard itself would drop the later points of a run that went back).
    """
    raw: dict[str, tuple[list[int], list[float], list[float]]] = {}
    fast = rec.FastScalars()
    for path in files:
        for data in rec.read_records(path):
            point = fast.decode(data)
            if point is not None:  # mltrack's own layout, decoded without protobuf
                tag, step, number, wall = point
                cols = raw.get(tag)
                if cols is None:
                    cols = raw[tag] = ([], [], [])
                cols[0].append(step)
                cols[1].append(number)
                cols[2].append(wall)
                continue
            try:
                event = rec.Event.FromString(data)
            except Exception:  # a record that is not an Event: skipped, as TensorBoard does
                continue
            if not event.HasField("summary"):
                continue
            step, wall = event.step, event.wall_time
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin and plugin != rec.SCALARS_PLUGIN:
                    continue
                scalar = rec.scalar_of(value)
                if scalar is None:
                    continue
                cols = raw.get(value.tag)
                if cols is None:
                    cols = raw[value.tag] = ([], [], [])
                cols[0].append(step)
                cols[1].append(scalar)
                cols[2].append(wall)
    out: dict[str, tuple[array[int], array[float], array[float]]] = {}
    for tag, (steps, values, walls) in raw.items():
        if all(a < b for a, b in itertools.pairwise(steps)):
            out[tag] = (array("q", steps), array("d", values), array("d", walls))
            continue
        last: dict[int, int] = {}
        for i, step in enumerate(steps):
            last[step] = i
        order = [last[s] for s in sorted(last)]
        out[tag] = (
            array("q", (steps[i] for i in order)),
            array("d", (values[i] for i in order)),
            array("d", (walls[i] for i in order)),
        )
    return out


def _foreign_meta(root: Path, folder: Path, files: Sequence[Path]) -> _Meta:
    """A run TensorBoard wrote itself: id from its path, times from its events, config from its hparams."""
    rel = folder.relative_to(root).as_posix()
    run_id = hashlib.sha256(f"tensorboard:{rel}".encode()).hexdigest()[:24]
    parent = folder.parent.relative_to(root).as_posix()
    experiment = parent if parent != "." else (root.name or "default")
    first: float | None = None
    last_wall: float | None = None
    config: dict[str, Any] = {}
    status = ExperimentStatus.COMPLETED
    finals: dict[str, tuple[int, float]] = {}
    for path in files:
        for event in rec.decode_events(path):
            wall = event.wall_time
            if wall:
                first = wall if first is None else min(first, wall)
                last_wall = wall if last_wall is None else max(last_wall, wall)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if plugin.plugin_name == HPARAMS_PLUGIN:
                    data = plugin_hparams_pb2.HParamsPluginData.FromString(plugin.content)
                    if data.HasField("session_start_info"):
                        for key, hp in data.session_start_info.hparams.items():
                            kind = hp.WhichOneof("kind")
                            config[key] = getattr(hp, kind) if kind and kind != "null_value" else None
                    elif data.HasField("session_end_info"):
                        code = api_pb2.Status.Name(data.session_end_info.status)
                        if code == "STATUS_FAILURE":
                            status = ExperimentStatus.FAILED
                    continue
                if plugin.plugin_name and plugin.plugin_name != rec.SCALARS_PLUGIN:
                    continue
                number = rec.scalar_of(value)
                if number is not None:
                    known = finals.get(value.tag)
                    if known is None or event.step >= known[0]:
                        finals[value.tag] = (event.step, number)
    start = _utc(first) if first is not None else datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc)
    return _Meta(
        run_id=run_id,
        folder=folder,
        experiment=experiment,
        name=folder.name,
        start=start,
        mltrack=False,
        config=config,
        status=status,
        end=_utc(last_wall) if last_wall is not None else start,
        final_metrics={tag: v for tag, (_s, v) in finals.items()},
    )


def _event_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(meta files, other event files) of a run folder, each in name (= creation) order."""
    meta: list[Path] = []
    events: list[Path] = []
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_events(e.name))
    except OSError:
        return [], []
    for name in names:
        (meta if name.endswith(META_SUFFIX) else events).append(folder / name)
    return meta, events


# --- writing -----------------------------------------------------------------------------------


@attrs.define
class _OpenRun:
    """A run this process writes: its folder, its two open event files, what it logged so far."""

    run_id: str
    folder: Path
    experiment: str
    start: datetime
    config: dict[str, Any]
    tags: list[str]
    events: IO[bytes] | None = None
    meta: IO[bytes] | None = None
    encoders: dict[str, rec.TagEncoder] = attrs.field(factory=dict)
    session_started: bool = False


class TensorboardBackend:
    """A TensorBoard log folder as an mltrack backend (written and read without TensorFlow or tensorboardX)."""

    def __init__(self, settings: TensorboardSettings) -> None:
        if settings.must_exist:
            require_logdir(settings)
        self.settings = settings
        self.root = settings.logdir
        self._lock = threading.RLock()
        self._open: dict[str, _OpenRun] = {}
        self._folders: dict[str, Path] = {}
        self._meta_cache: dict[Path, tuple[tuple[Any, ...], _Meta | None]] = {}
        self._writer = WriterRecord.current().to_text()

    @classmethod
    def from_config(cls, config: BackendConfig) -> TensorboardBackend:
        """Build the backend from mltrack's backend configuration."""
        return cls(TensorboardSettings.from_backend_config(config))

    # --- files ------------------------------------------------------------------------

    def _append(self, state: _OpenRun, data: bytes, meta: bool) -> None:
        """Append framed records to the run's events (or meta) file, created on first use, and flush."""
        handle = state.meta if meta else state.events
        if handle is None:
            state.folder.mkdir(parents=True, exist_ok=True)
            path = state.folder / _events_name(META_SUFFIX if meta else "")
            handle = path.open("ab")
            handle.write(rec.file_version_record(time.time()))
            if meta:
                state.meta = handle
            else:
                state.events = handle
        handle.write(data)
        handle.flush()

    def _write_values(self, state: _OpenRun, values: Sequence[Any], meta: bool = True) -> None:
        event = rec.Event(wall_time=time.time(), summary=summary_pb2.Summary(value=list(values)))
        self._append(state, rec.encode_event(event), meta)

    def _close_files(self, state: _OpenRun) -> None:
        for handle in (state.events, state.meta):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
        state.events = state.meta = None

    def _folder(self, run_id: str, foreign: bool = True) -> Path | None:
        """The folder of run ``run_id`` (a mltrack run, or with ``foreign`` one TensorBoard wrote), or None.

        A mltrack run is found by its folder name; a run TensorBoard wrote needs a walk of the
        whole log folder, which ``create_run`` (a new mltrack id) skips."""
        if not _HEX_ID.match(run_id):
            return None
        cached = self._folders.get(run_id)
        if cached is not None and cached.is_dir():
            return cached
        self._folders.pop(run_id, None)
        if len(run_id) == 24:
            for found in self.root.glob(f"*/*-{run_id}"):
                if found.is_dir() and _event_files(found)[0]:
                    self._folders[run_id] = found
                    return found
        if foreign:
            for meta in self._scan():
                if meta.run_id == run_id:
                    return meta.folder
        return None

    def _meta(self, folder: Path) -> _Meta | None:
        """The run in ``folder`` (cached until one of its event files changes)."""
        meta_files, event_files = _event_files(folder)
        files = meta_files if meta_files else event_files
        if not files:
            return None
        key = tuple((p.name, *_stat(p)) for p in files)
        cached = self._meta_cache.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        meta = _read_meta(folder, meta_files) if meta_files else _foreign_meta(self.root, folder, event_files)
        self._meta_cache[folder] = (key, meta)
        return meta

    def _scan(self) -> Iterator[_Meta]:
        """Every run under the log folder: mltrack's at ``<experiment>/<run>``, TensorBoard's anywhere."""
        if not self.root.is_dir():
            return
        for current, dirs, files in os.walk(self.root):
            folder = Path(current)
            if any(_is_events(f) for f in files):
                meta = self._meta(folder)
                if meta is not None:
                    self._folders[meta.run_id] = folder
                    yield meta
                    if meta.mltrack:
                        dirs[:] = []  # its artifacts are not runs
                        continue
            dirs[:] = [d for d in dirs if not d.startswith(".")]

    # --- writes -------------------------------------------------------------------------

    def _writable(self, run_id: str) -> _OpenRun:
        """The state of a run to write to; a run another process created is resumed."""
        state = self._open.get(run_id)
        if state is not None:
            return state
        folder = self._folder(run_id)
        meta = None if folder is None else self._meta(folder)
        if meta is None or not meta.mltrack:
            raise RunNotFoundError(f"tensorboard backend: no mltrack run {run_id!r} under {self.root}")
        state = _OpenRun(
            run_id=run_id,
            folder=meta.folder,
            experiment=meta.experiment,
            start=meta.start,
            config=dict(meta.config),
            tags=list(meta.tags),
            session_started=True,
        )
        self._open[run_id] = state
        if meta.status is ExperimentStatus.RUNNING:
            self._write_values(state, [rec.json_summary("mltrack/writer", {"writer": self._writer})])
        return state

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        """Create the run folder and its meta events: identity, config, tags, description, writer."""
        with self._lock, _errors(f"creating run {run.id}"):
            if run.id in self._open:
                return
            if (
                self._folder(run.id, foreign=False) is not None
            ):  # a retried create: carry on with what is stored
                self._writable(run.id)
                return
            folder = self.root / _safe(run.experiment_name) / f"{_safe(run.run_name)}-{run.id}"
            state = _OpenRun(
                run_id=run.id,
                folder=folder,
                experiment=run.experiment_name,
                start=run.start_time,
                config=dict(run.config),
                tags=list(run.tags),
            )
            info = {
                "id": run.id,
                "experiment": run.experiment_name,
                "name": run.run_name,
                "start_time": _iso(run.start_time),
                "config": run.config,
                "tags": list(run.tags),
                "description": run.description,
                "writer": self._writer,
            }
            values = [rec.json_summary("mltrack/run", info)]
            if run.description:
                values.append(rec.text_summary("run/description", run.description))
            if run.tags:
                values.append(rec.text_summary("run/tags", ", ".join(run.tags)))
            self._write_values(state, values)
            self._open[run.id] = state
            self._folders[run.id] = folder

    def _start_session(self, state: _OpenRun) -> None:
        """Write the HParams tab's session start (on the first points, so config logged just after
        ``create_run``, as SB3 does, is in it)."""
        if state.session_started:
            return
        state.session_started = True
        self._write_values(state, [_session_start(state.config, state.start)])

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        """Append one scalar event per point (step, wall time, float64 value) to the run's events file."""
        with self._lock, _errors(f"logging metrics of run {run_id}"):
            state = self._writable(run_id)
            self._start_session(state)
            out = bytearray()
            announce = []
            for name, context, steps, values, timestamps in batch.groups():
                tag = _metric_tag(name, context)
                encoder = state.encoders.get(tag)
                if encoder is None:
                    encoder = state.encoders[tag] = rec.TagEncoder(tag)
                    if context or tag != name:
                        info = {"tag": tag, "name": name, "context": to_plain(context)}
                        announce.append(rec.json_summary("mltrack/metric", info))
                out += encoder.records(steps, values, timestamps)
            if announce:  # the names of new tags are stored before their points
                self._write_values(state, announce)
            self._append(state, bytes(out), meta=False)

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the stored config (and the HParams tab, if its session has not started)."""
        with self._lock, _errors(f"logging params of run {run_id}"):
            state = self._writable(run_id)
            state.config.update({str(k): to_plain(v) for k, v in params.items()})
            values = [rec.json_summary("mltrack/config", {"config": state.config})]
            if state.session_started:  # TensorBoard keeps the first session start; this one is for readers
                values.append(_session_start(state.config, state.start))
            self._write_values(state, values)

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add tags (stored as the run's whole tag list, also shown in the Text tab)."""
        with self._lock, _errors(f"tagging run {run_id}"):
            state = self._writable(run_id)
            state.tags = sorted({*state.tags, *tags})
            self._write_values(
                state,
                [
                    rec.json_summary("mltrack/tags", {"tags": state.tags}),
                    rec.text_summary("run/tags", ", ".join(state.tags)),
                ],
            )

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Copy the file to ``<run folder>/artifacts/<name>``; its type, size, hash and metadata to the meta events."""
        with self._lock, _errors(f"storing artifact {artifact.name!r} of run {run_id}"):
            state = self._writable(run_id)
            target = state.folder / ARTIFACTS / artifact.name
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.{os.getpid()}.part")
            shutil.copyfile(artifact.file_path, staged)
            os.replace(staged, target)  # a reader sees the old file or the new one, never half
            info = {
                "name": artifact.name,
                "type": artifact.artifact_type.value,
                "size": artifact.size,
                "sha256": artifact.sha256,
                "metadata": to_plain(artifact.metadata),
            }
            self._write_values(state, [rec.json_summary("mltrack/artifact", info)])

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        """Store status, end time and final metrics, and the HParams tab's session end."""
        with self._lock, _errors(f"finishing run {run_id}"):
            state = self._writable(run_id)
            self._start_session(state)
            self._finish(state, ExperimentStatus(status), end_time, final_metrics)
            self._close_files(state)
            self._open.pop(run_id, None)

    def _finish(
        self,
        state: _OpenRun,
        status: ExperimentStatus,
        end_time: datetime,
        final_metrics: Mapping[str, float],
    ) -> None:
        info = {
            "status": status.value,
            "end_time": _iso(end_time),
            "final_metrics": {str(k): float(v) for k, v in final_metrics.items()},
        }
        self._write_values(state, [rec.json_summary("mltrack/status", info), _session_end(status, end_time)])
        for handle in (state.events, state.meta):
            if handle is not None:
                with contextlib.suppress(OSError):
                    os.fsync(handle.fileno())

    @hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        """Reopen a finished or crashed run: a RUNNING status record (no end time) and this process as writer.

        Later meta records win, so readers see the run RUNNING again; its points go to event
        files of this process in the same folder, read with the earlier ones as one history.
        """
        with self._lock, _errors(f"resuming run {run_id}"):
            state = self._writable(run_id)
            meta = self._meta(state.folder)
            finals = {} if meta is None else meta.final_metrics
            info = {"status": ExperimentStatus.RUNNING.value, "end_time": None, "final_metrics": finals}
            self._write_values(
                state,
                [
                    rec.json_summary("mltrack/status", info),
                    rec.json_summary("mltrack/writer", {"writer": self._writer}),
                ],
            )

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run's folder: its event files and artifacts."""
        with self._lock, _errors(f"deleting run {run_id}"):
            state = self._open.pop(run_id, None)
            if state is not None:
                self._close_files(state)
            folder = self._folder(run_id)
            if folder is None:
                return
            meta = self._meta(folder)
            if meta is not None and meta.mltrack:
                shutil.rmtree(folder, ignore_errors=True)
            else:  # a run TensorBoard wrote: its event files only (sub-folders may be runs of their own)
                for path in _event_files(folder)[1]:
                    path.unlink(missing_ok=True)
            self._folders.pop(run_id, None)
            self._meta_cache.pop(folder, None)

    # --- reads --------------------------------------------------------------------------

    def _summary(self, meta: _Meta) -> ExperimentSummary:
        status, end, finals = meta.status, meta.end, meta.final_metrics
        if meta.mltrack and status is ExperimentStatus.RUNNING and meta.run_id not in self._open:
            record = WriterRecord.from_text(meta.writer)
            if record is not None and record.is_gone():  # else alive, or where this process cannot tell
                fresh = self._meta(meta.folder)
                if fresh is not None and (
                    fresh.status is not ExperimentStatus.RUNNING or fresh.writer != meta.writer
                ):
                    # What was read is older than the writer's end: it finished (or a new writer
                    # resumed) the run before it went. Judge the run as it is now.
                    return self._summary(fresh)
                status, end, finals = ExperimentStatus.CRASHED, self._mark_crashed(meta), self._latest(meta)
        return ExperimentSummary(
            experiment_id=meta.run_id,
            name=meta.name,
            status=status,
            start_time=meta.start,
            end_time=end if status.is_finished else None,
            config=meta.config,
            final_metrics=finals,
            tags=tuple(t for t in meta.tags if 0 < len(t) <= MAX_NAME_LENGTH and t.isprintable()),
            experiment_name=meta.experiment,
            description=meta.description,
        )

    def _latest(self, meta: _Meta) -> dict[str, float]:
        """The last value of each metric, named as mltrack names final metrics."""
        out: dict[str, float] = {}
        for tag, (_steps, values, _walls) in read_scalars(_event_files(meta.folder)[1]).items():
            if len(values):
                name, context = meta.metrics.get(tag, (tag, {}))
                out[final_metric_key(name, tuple(sorted(context.items())))] = values[-1]
        return out

    def _mark_crashed(self, meta: _Meta) -> datetime:
        """Mark a RUNNING run whose writer process is gone (on this host) CRASHED; return the time."""
        now = datetime.now(timezone.utc)
        state = _OpenRun(
            run_id=meta.run_id,
            folder=meta.folder,
            experiment=meta.experiment,
            start=meta.start,
            config=meta.config,
            tags=meta.tags,
        )
        try:  # the first reader to notice finishes it in the files too, so TensorBoard agrees
            self._finish(state, ExperimentStatus.CRASHED, now, self._latest(meta))
        except OSError as exc:
            log.debug("mltrack-tensorboard: could not mark run %s crashed: %s", meta.run_id, exc)
        finally:
            self._close_files(state)
        return now

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        """Every run under the log folder matching the filter, newest first."""
        with self._lock, _errors("listing runs"):
            out = [s for s in (self._summary(m) for m in self._scan()) if run_filter.matches(s)]
        out.sort(key=lambda s: s.start_time, reverse=True)
        return out[: run_filter.limit] if run_filter.limit is not None else out

    @hookimpl
    def mltrack_get_run(self, run_id: str) -> ExperimentSummary | None:
        """The run with exactly this id, or None."""
        with self._lock, _errors(f"reading run {run_id}"):
            folder = self._folder(run_id)
            meta = None if folder is None else self._meta(folder)
            return None if meta is None else self._summary(meta)

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's scalar series, sorted by step, the last write of a step winning."""
        with self._lock, _errors(f"reading metrics of run {run_id}"):
            folder = self._folder(run_id)
            meta = None if folder is None else self._meta(folder)
            if meta is None or folder is None:
                return None
            wanted = None if names is None else set(names)
            out = []
            for tag, (steps, values, walls) in read_scalars(_event_files(folder)[1]).items():
                name, context = meta.metrics.get(tag, (tag, {}))
                if wanted is None or name in wanted:
                    out.append(
                        MetricSeries(name=name, steps=steps, values=values, timestamps=walls, context=context)
                    )
            return out

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts, each pointing at its file under ``<run folder>/artifacts``."""
        with self._lock, _errors(f"listing artifacts of run {run_id}"):
            folder = self._folder(run_id)
            meta = None if folder is None else self._meta(folder)
            if meta is None or folder is None:
                return None
            out = []
            for name, info in sorted(meta.artifacts.items()):
                path = folder / ARTIFACTS / name
                if not path.is_file():
                    continue
                out.append(
                    ModelArtifact(
                        name=name,
                        artifact_type=ArtifactType(info.get("type") or ArtifactType.OTHER.value),
                        file_path=str(path),
                        metadata=info.get("metadata") or {},
                        size=info.get("size"),
                        sha256=info.get("sha256"),
                    )
                )
            return out

    # --- user interface and health ------------------------------------------------------

    @hookimpl
    def mltrack_open_ui(self, host: str, port: int | None) -> UiHandle:
        """Start ``tensorboard --logdir <log folder>`` (port 6006 if free) in its own process group."""
        if port is None:
            port = TENSORBOARD_PORT if port_free(host, TENSORBOARD_PORT) else free_port(host)
        ui = start_tensorboard(self.root, host=host, port=port)
        return UiHandle(url=ui.url, pid=ui.pid, stop=ui.stop)

    @hookimpl
    def mltrack_health(self) -> HealthStatus:
        """Log folder writable, free space, tensorboard version; never raises."""
        details: dict[str, Any] = {
            "logdir": str(self.root),
            "tensorboard_version": TENSORBOARD_VERSION,
            "open_runs": len(self._open),
        }
        issues: list[str] = []
        try:
            details["free_bytes"] = free_bytes(self.root)
            issues = storage_problems(self.root, setting=self.settings.source)
            details["writable"] = not any("writable" in p or "file" in p for p in issues)
        except Exception as exc:
            issues.append(f"TensorBoard log folder {self.root} unusable: {type(exc).__name__}: {exc}")
        return HealthStatus(not issues, tuple(issues), backend="tensorboard", details=details)

    def close(self) -> None:
        """Close the event files of open runs; what they hold is stored (an unfinished run stays RUNNING)."""
        with self._lock:
            for state in self._open.values():
                self._close_files(state)
            self._open.clear()


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn file-system and format errors into mltrack's typed errors, saying what failed."""
    try:
        yield
    except (BackendError, RunNotFoundError):
        raise
    except Exception as exc:
        raise BackendError(f"tensorboard backend: {what}: {type(exc).__name__}: {exc}") from exc
