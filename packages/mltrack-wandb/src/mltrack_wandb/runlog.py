"""Reading W&B run folders: a run's ``.wandb`` log (and mltrack's sidecar) as what mltrack reads.

Each log is parsed incrementally, from where the last read stopped, so a reader sees every
record a writer has appended; history rows are parsed only when metrics are read, so listing
runs reads little more than the framing. Folders W&B's own SDK wrote read the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
from wandb.proto import wandb_internal_pb2

import mltrack
from mltrack.authoring import WriterRecord, run_status
from mltrack.models import MAX_NAME_LENGTH, ExperimentStatus
from mltrack_wandb import records

__all__ = ["EXIT_CODES", "SIDECAR", "RunLog", "merge_segments", "mltrack_id", "read_run"]

pb: Any = wandb_internal_pb2  # generated per protobuf version: no type stubs

WANDB_FOLDER = "wandb"
SIDECAR = "mltrack-run.json"
ARTIFACTS = "artifacts"
RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-([A-Za-z0-9_-]{1,128})$")
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MLTRACK_ID = re.compile(r"^[0-9a-f]{24}$")
EXIT_CODES = {
    ExperimentStatus.COMPLETED: 0,
    ExperimentStatus.FAILED: 1,
    ExperimentStatus.INTERRUPTED: 130,
    ExperimentStatus.CRASHED: 137,
}
"""The exit code each final status is stored with (W&B has states finished and failed only)."""
_STATUS_OF_CODE = {code: status for status, code in EXIT_CODES.items()}


def _utc(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC time."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def _number(text: str) -> float | None:
    """A ``value_json`` as a float, or None for anything not a number (text, media, booleans)."""
    try:
        return float(text)  # "1.5", "NaN", "Infinity", "-Infinity"
    except ValueError:
        pass
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _json(text: str) -> Any:
    """A ``value_json`` as its value; text that is not JSON as itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def mltrack_id(wandb_id: str) -> str:
    """mltrack's id of a W&B run: its own id for a run mltrack wrote (24 hex characters, as every
    mltrack id), else one derived from W&B's (``pqv4z8qo``), stable, in mltrack's form, so the run
    can be copied to any store."""
    if MLTRACK_ID.match(wandb_id):
        return wandb_id
    return hashlib.sha256(f"wandb:{wandb_id}".encode()).hexdigest()[:24]


@attrs.define
class RunLog:
    """What a run's ``.wandb`` log (and mltrack's sidecar) say, parsed up to ``offset``."""

    folder: Path
    run_id: str
    offset: int = 0
    inode: int = -1
    last_num: int = 0
    project: str = ""
    entity: str = ""
    name: str = ""
    notes: str = ""
    tags: list[str] = attrs.field(factory=list)
    start: datetime | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    summary: dict[str, Any] = attrs.field(factory=dict)
    exit_code: int | None = None
    runtime: int = 0
    columns: dict[str, tuple[list[int], list[float], list[float]]] = attrs.field(factory=dict)
    pending_rows: list[bytes] = attrs.field(factory=list)
    """History records read but not parsed yet: listing runs never needs them."""
    artifacts: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    sidecar: dict[str, Any] = attrs.field(factory=dict)
    sidecar_stamp: tuple[int, int] = (-1, -1)

    @property
    def path(self) -> Path:
        """The run's log: ``run-<W&B id>.wandb`` in its folder."""
        return self.folder / f"run-{self.run_id}.wandb"

    def refresh(self) -> RunLog:
        """Read what was appended since the last call (all of it for a new or replaced file)."""
        try:
            with self.path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                if inode != self.inode or os.fstat(handle.fileno()).st_size < self.offset:
                    self._reset(inode)
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        if data:
            for raw, end in records.decode(data, self.offset):
                history_num = records.history_num(raw)
                if history_num is None:
                    self._apply(pb.Record.FromString(raw))
                else:
                    self.last_num = max(self.last_num, history_num)
                    self.pending_rows.append(raw)
                self.offset = end
        self._read_sidecar()
        return self

    def _reset(self, inode: int) -> None:
        """Forget what was read: the log was replaced (a run deleted and written again)."""
        fresh = RunLog(self.folder, self.run_id)
        for field in attrs.fields(RunLog):
            setattr(self, field.name, getattr(fresh, field.name))
        self.inode = inode

    def _read_sidecar(self) -> None:
        path = self.folder / SIDECAR
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            if stamp != self.sidecar_stamp:
                self.sidecar = json.loads(path.read_text())
                self.sidecar_stamp = stamp
        except (OSError, ValueError):
            return

    def _apply(self, record: Any) -> None:
        self.last_num = max(self.last_num, record.num)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            self._history(record.history)
        elif kind == "summary":
            for item in record.summary.update:
                self.summary[".".join(item.nested_key) if item.nested_key else item.key] = _json(
                    item.value_json
                )
            for item in record.summary.remove:
                self.summary.pop(".".join(item.nested_key) if item.nested_key else item.key, None)
        elif kind == "config":
            self._config(record.config)
        elif kind == "run":
            run = record.run
            self.project, self.entity = run.project or self.project, run.entity or self.entity
            self.name, self.notes = run.display_name, run.notes
            self.tags = list(run.tags)
            if run.HasField("start_time"):
                self.start = run.start_time.ToDatetime(tzinfo=timezone.utc)
            self._config(run.config)
        elif kind == "exit":
            self.exit_code, self.runtime = record.exit.exit_code, record.exit.runtime
        elif kind == "artifact":
            self._artifact(record.artifact)

    def _config(self, config: Any) -> None:
        for item in config.update:
            if item.nested_key:
                target = self.config
                for part in item.nested_key[:-1]:
                    target = target.setdefault(part, {})
                target[item.nested_key[-1]] = _json(item.value_json)
            else:
                self.config[item.key] = _json(item.value_json)
        for item in config.remove:
            self.config.pop(item.key, None)

    @property
    def history(self) -> dict[str, tuple[list[int], list[float], list[float]]]:
        """Each history key's (steps, values, timestamps), in log order."""
        if self.pending_rows:
            for raw in self.pending_rows:
                self._history(pb.Record.FromString(raw).history)
            self.pending_rows.clear()
        return self.columns

    def _history(self, row: Any) -> None:
        step = row.step.num if row.HasField("step") else None
        stamp = 0.0
        points = []
        for item in row.item:
            key = ".".join(item.nested_key) if item.nested_key else item.key
            if key.startswith("_"):
                if key == "_timestamp":
                    stamp = _number(item.value_json) or 0.0
                elif key == "_step" and step is None:
                    step = int(_number(item.value_json) or 0)
                continue
            value = _number(item.value_json)
            if value is not None:
                points.append((key, value))
        for key, value in points:
            cols = self.columns.get(key)
            if cols is None:
                cols = self.columns[key] = ([], [], [])
            cols[0].append(step or 0)
            cols[1].append(value)
            cols[2].append(stamp)

    def _artifact(self, artifact: Any) -> None:
        extra_meta = _json(artifact.metadata) if artifact.metadata else {}
        for entry in artifact.manifest.contents:
            extra = {e.key: _json(e.value_json) for e in entry.extra}
            self.artifacts[entry.path] = {
                "type": extra.get("mltrack_type", artifact.type),
                "metadata": extra_meta if isinstance(extra_meta, dict) else {},
                "size": entry.size or None,
                "sha256": extra.get("sha256"),
                "local_path": entry.local_path,
            }

    # --- what mltrack reads -------------------------------------------------------------

    @property
    def experiment(self) -> str:
        """The experiment as mltrack was given it (W&B's project may have lost characters)."""
        return str(self.sidecar.get("experiment") or self.project or "uncategorized")

    def metric_name(self, key: str) -> tuple[str, dict[str, Any]]:
        """The metric name and context behind a history key."""
        known = self.sidecar.get("metrics", {}).get(key)
        if isinstance(known, list) and len(known) == 2 and isinstance(known[1], dict):
            return str(known[0]), known[1]
        return key, {}

    def stored_status(self) -> ExperimentStatus:
        """The status the log holds: RUNNING without an exit record, else the exit code's."""
        if self.exit_code is None:
            return ExperimentStatus.RUNNING
        return _STATUS_OF_CODE.get(self.exit_code, ExperimentStatus.FAILED)

    def writer(self) -> WriterRecord | None:
        """The process that writes the run (from the sidecar), for crash detection; None for W&B's runs."""
        return WriterRecord.from_json(self.sidecar.get("writer"))

    def latest(self) -> dict[str, float]:
        """The summary's numbers: W&B's latest value of each metric, and the final metrics."""
        out = {}
        for key, value in self.summary.items():
            if key.startswith("_") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out[key] = float(value)
        return out

    def summary_of(self) -> mltrack.ExperimentSummary:
        """The run as mltrack reads it; a RUNNING run whose writer is gone reads CRASHED."""
        status = run_status(self.stored_status(), self.writer())
        start = self.start or _utc(self.path.stat().st_mtime if self.path.exists() else 0)
        end: datetime | None = None
        if status.is_finished:
            stored_end = self.sidecar.get("end_time")
            if isinstance(stored_end, str):
                end = datetime.fromisoformat(stored_end)
            elif self.exit_code is not None:
                end = start + timedelta(seconds=self.runtime)
            else:  # a dead writer's run: it ended by its last write
                end = max(start, _utc(self.path.stat().st_mtime))
        config = {k: v for k, v in self.config.items() if k != "_wandb"}
        return mltrack.ExperimentSummary(
            experiment_id=mltrack_id(self.run_id),
            name=self.name or self.run_id,
            status=status,
            start_time=start,
            end_time=end,
            config=config,
            final_metrics=self.latest(),
            tags=tuple(t for t in self.tags if 0 < len(t) <= MAX_NAME_LENGTH and t.isprintable()),
            experiment_name=self.experiment,
            description=self.notes or None,
        )


def merge_segments(segments: list[RunLog]) -> RunLog:
    """One run read from the folders W&B keeps of it, oldest first: a resumed run gets a new
    ``offline-run-<time>-<id>`` folder per resume (as ``wandb.init(id=..., resume=...)`` offline).

    The last folder says the run's state (status, name, tags, config, writer); the start is
    the first one's; history, summary and artifacts are every folder's, later ones winning.
    """
    if len(segments) == 1:
        return segments[0]
    last = segments[-1]
    merged = attrs.evolve(last, columns={}, pending_rows=[], summary={}, artifacts={})
    merged.start = segments[0].start or last.start
    metrics: dict[str, Any] = {}
    for part in segments:
        for key, (steps, values, stamps) in part.history.items():
            cols = merged.columns.setdefault(key, ([], [], []))
            cols[0].extend(steps)
            cols[1].extend(values)
            cols[2].extend(stamps)
        merged.summary.update(part.summary)
        merged.artifacts.update(part.artifacts)
        metrics.update(part.sidecar.get("metrics") or {})
    merged.sidecar = {**last.sidecar, "metrics": metrics}
    return merged


def read_run(folder: str | os.PathLike[str]) -> RunLog | None:
    """Parse one W&B run folder (``.../offline-run-<time>-<id>``); None if it holds no run log."""
    path = Path(folder)
    match = RUN_FOLDER.match(path.name)
    if match is None or not (path / f"run-{match.group(1)}.wandb").is_file():
        return None
    return RunLog(path, match.group(1)).refresh()
