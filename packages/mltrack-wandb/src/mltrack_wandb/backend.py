"""The ``wandb`` backend: mltrack's hooks over W&B offline run folders, written and read without a server.

Layout and mapping (what ``wandb.init(mode="offline")`` would have written):

* run -> ``<root>/wandb/offline-run-<YYYYmmdd_HHMMSS>-<run id>/run-<run id>.wandb``, W&B's
  transaction log (see :mod:`mltrack_wandb.records`) of ``wandb_internal_pb2.Record``;
* experiment -> project; run name -> display name; description -> notes; tags -> tags;
  config -> the run's config (``log_params``: config updates);
* metrics -> history rows (``_step`` = mltrack's step, ``_timestamp`` = the point's time),
  points of one step and time logged together in one row; the latest value of each metric
  -> the summary; a metric logged in a context is the key ``name{key=value,...}``;
* status -> the exit record's code (COMPLETED 0, FAILED 1, INTERRUPTED 130, CRASHED 137);
  final metrics -> the summary;
* artifacts -> W&B artifacts (type = mltrack's artifact type, metadata as given, one manifest
  entry named like the artifact, pointing at the copy under ``<run folder>/artifacts``);
* what W&B has no field for (the experiment name as given, the writer process for crash
  detection, metric contexts, the exact end time) -> ``mltrack-run.json`` beside the log,
  which W&B ignores.

Reads come from the logs alone (:mod:`mltrack_wandb.runlog`); offline folders W&B itself
wrote read as runs too. Uploads (``WANDB_MODE=online``) are :mod:`mltrack_wandb.uploads`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import string
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import attrs
import wandb

import mltrack
from mltrack.authoring import SeriesBuilder, WriterRecord, artifact_path, health_status
from mltrack.config import BackendConfig
from mltrack.errors import BackendError, RunNotFoundError
from mltrack.models import ArtifactType, ExperimentStatus, to_plain
from mltrack.tracker import final_metric_key
from mltrack_wandb import records
from mltrack_wandb.runlog import (
    ARTIFACTS,
    EXIT_CODES,
    MLTRACK_ID,
    RUN_FOLDER,
    RUN_ID,
    SIDECAR,
    WANDB_FOLDER,
    RunLog,
    merge_segments,
    mltrack_id,
    pb,
    read_run,
)
from mltrack_wandb.settings import WandbSettings
from mltrack_wandb.uploads import Uploads

__all__ = ["RunLog", "WandbBackend", "mltrack_id", "read_run"]

_PROJECT_UNSAFE = re.compile(r"[/\\#?%:\x00-\x1f\x7f]")
_ARTIFACT_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ID_CHARS = string.ascii_lowercase + string.digits


def _number_json(value: float) -> str:
    """A float as W&B writes it in ``value_json`` (``NaN``, ``Infinity`` as JSON text allows)."""
    return repr(value) if math.isfinite(value) else json.dumps(value)


def project_name(experiment: str) -> str:
    """The W&B project of an experiment: its name without the characters W&B refuses, at most 128."""
    return _PROJECT_UNSAFE.sub("-", experiment)[:128] or "uncategorized"


def artifact_collection(name: str) -> str:
    """The W&B artifact name of an mltrack artifact name (``models/best.zip`` -> ``models-best.zip``)."""
    return _ARTIFACT_UNSAFE.sub("-", name)[:128]


@attrs.define
class _OpenRun:
    """A run this process writes: its log file and what the next records need."""

    log: RunLog
    handle: IO[bytes]
    offset: int
    num: int
    start: datetime
    project: str
    name: str
    notes: str
    tags: list[str]
    config: dict[str, Any]
    keys: dict[tuple[str, tuple[tuple[str, Any], ...]], str] = attrs.field(factory=dict)


class WandbBackend(mltrack.Backend):
    """mltrack's hooks over W&B offline run folders under ``<root>/wandb``."""

    def __init__(self, settings: WandbSettings) -> None:
        self.settings = settings
        self.root = settings.store.open()
        self.runs_dir = self.root / WANDB_FOLDER
        if not settings.store.must_exist:
            self.runs_dir.mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._open: dict[str, _OpenRun] = {}
        self._logs: dict[Path, RunLog] = {}
        self._folders: dict[str, Path] = {}
        self.uploads = Uploads(self.root)
        self._writer = WriterRecord.current().to_json()

    @classmethod
    def from_config(cls, config: BackendConfig) -> WandbBackend:
        """The backend for the configuration mltrack hands its factory."""
        return cls(WandbSettings.from_config(config))

    # --- folders ------------------------------------------------------------------------

    def _folder(self, run_id: str) -> Path | None:
        """The run folder of exactly mltrack id ``run_id`` (user input: anything not an id is no run).

        A resumed run has a folder per resume: this is the latest, the one written to."""
        known = self._folders.get(run_id)
        if known is not None and known.is_dir() and run_id in self._open:
            return known
        segments = self._segments(run_id)
        return segments[-1] if segments else None

    def _segments(self, run_id: str) -> list[Path]:
        """Every folder of run ``run_id``, oldest first (one, or one more per resume)."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id) or not self.runs_dir.is_dir():
            return []
        pattern = f"*run-*-{run_id}" if MLTRACK_ID.match(run_id) else "*run-*-*"
        known = self._folders.get(run_id)
        match = None if known is None else RUN_FOLDER.match(known.name)
        if match is not None and match.group(1) != run_id:  # a run W&B wrote: its folders name W&B's id
            pattern = f"*run-*-{match.group(1)}"
        found = []
        for path in self.runs_dir.glob(pattern):
            match = RUN_FOLDER.match(path.name)
            if match is None or not (path / f"run-{match.group(1)}.wandb").is_file():
                continue
            if mltrack_id(match.group(1)) == run_id:
                found.append(path)
        found.sort(key=lambda path: path.name.split("run-", 1)[1])  # by the time in the name
        if found:
            self._folders[run_id] = found[-1]
        return found

    def _log(self, folder: Path) -> RunLog | None:
        """The run in ``folder``, read up to what was appended last (cached per folder); None if none."""
        match = RUN_FOLDER.match(folder.name)
        if match is None:
            return None
        cached = self._logs.get(folder)
        if cached is None:
            cached = self._logs[folder] = RunLog(folder, match.group(1))
        cached.refresh()
        return cached if cached.start is not None or cached.last_num else None

    def _scan(self) -> Iterator[RunLog]:
        """Every run under ``<root>/wandb``, mltrack's and W&B's own (a resumed run's folders as one)."""
        if not self.runs_dir.is_dir():
            return
        runs: dict[str, list[tuple[str, RunLog]]] = {}
        for path in self.runs_dir.iterdir():
            if RUN_FOLDER.match(path.name) and path.is_dir():
                found = self._log(path)
                if found is not None:
                    runs.setdefault(mltrack_id(found.run_id), []).append(
                        (path.name.split("run-", 1)[1], found)
                    )
        for run_id, segments in runs.items():
            segments.sort(key=lambda item: item[0])
            self._folders.setdefault(run_id, segments[-1][1].folder)
            yield merge_segments([log for _, log in segments])

    # --- writing records ----------------------------------------------------------------

    def _append(self, state: _OpenRun, *recs: Any) -> None:
        """Append records (protobuf messages, or history row bodies from
        :func:`records.history_body`) to the run's log; flushed, so other processes read them at once."""
        raw = []
        info = records.record_info(state.log.run_id)
        for rec in recs:
            state.num += 1
            if isinstance(rec, bytes):  # a history row's body, encoded by hand
                raw.append(records.history_record(state.num, rec, info))
                continue
            rec.num = state.num
            rec._info.stream_id = state.log.run_id
            raw.append(rec.SerializeToString())
        data = records.encode(raw, state.offset)
        state.handle.write(data)
        state.handle.flush()
        state.offset += len(data)

    def _run_record(self, state: _OpenRun) -> Any:
        """The run record W&B keeps of a run: id, project, name, notes, tags, start, config."""
        rec = pb.Record()
        run = rec.run
        run.run_id = state.log.run_id
        run.project = state.project
        if self.settings.entity:
            run.entity = self.settings.entity
        run.display_name = state.name
        run.notes = state.notes
        run.tags.extend(state.tags)
        run.host = self._writer["host"]
        run.start_time.FromDatetime(state.start.astimezone(timezone.utc).replace(tzinfo=None))
        for key, value in {"_wandb": {}, **state.config}.items():
            item = run.config.update.add()
            item.key = key
            item.value_json = json.dumps(to_plain(value), ensure_ascii=False)
        run.telemetry.cli_version = wandb.__version__
        run.telemetry.python_version = ".".join(map(str, sys.version_info[:3]))
        return rec

    def _write_sidecar(self, state: _OpenRun, **changes: Any) -> None:
        """Update ``mltrack-run.json``, replaced whole so readers never see half of it."""
        path = state.log.folder / SIDECAR
        current = dict(state.log.sidecar)
        current.update(changes)
        state.log.sidecar = current
        temp = path.with_name(f".{SIDECAR}.{os.getpid()}")
        temp.write_text(json.dumps(current, ensure_ascii=False))
        os.replace(temp, path)  # readers see the old file or the new one

    def _writable(self, run_id: str) -> _OpenRun:
        """The open run ``run_id``, reopened from its folder if this process did not create it."""
        state = self._open.get(run_id)
        if state is not None:
            return state
        folder = self._folder(run_id)
        parsed = None if folder is None else self._log(folder)
        if parsed is None or folder is None:
            raise RunNotFoundError(f"wandb: no run {run_id!r} under {self.runs_dir}")
        if parsed.path.stat().st_size > parsed.offset:
            os.truncate(parsed.path, parsed.offset)  # a torn tail a killed writer left: readers stop there
        handle = parsed.path.open("ab")
        state = _OpenRun(
            log=parsed,
            handle=handle,
            offset=handle.tell(),
            num=parsed.last_num,
            start=parsed.start or datetime.now(timezone.utc),
            project=parsed.project,
            name=parsed.name,
            notes=parsed.notes,
            tags=list(parsed.tags),
            config={k: v for k, v in parsed.config.items() if k != "_wandb"},
        )
        for key, (name, context) in parsed.sidecar.get("metrics", {}).items():
            state.keys[(name, tuple(sorted(context.items())))] = key
        if parsed.sidecar.get("writer") != self._writer:
            # this process writes the run now (a writer process replacing one that died): readers
            # must follow it, not the dead one
            self._write_sidecar(state, writer=self._writer)
        self._open[run_id] = state
        return state

    @mltrack.hookimpl
    def mltrack_create_run(self, run: mltrack.ExperimentRun) -> None:
        """Create ``<root>/wandb/offline-run-<start>-<id>`` with the header and the run record."""
        with self._lock, _errors(f"creating run {run.id}"):
            if run.id in self._open or self._folder(run.id) is not None:
                self._writable(run.id)  # a retried create: carry on with what is stored
                return
            stamp = run.start_time.astimezone().strftime("%Y%m%d_%H%M%S")
            folder = self.runs_dir / f"offline-run-{stamp}-{run.id}"
            (folder / "files").mkdir(parents=True, exist_ok=True)
            parsed = RunLog(folder, run.id)
            state = _OpenRun(
                log=parsed,
                handle=parsed.path.open("ab"),
                offset=0,
                num=0,
                start=run.start_time,
                project=project_name(run.experiment_name),
                name=run.run_name,
                notes=run.description or "",
                tags=list(run.tags),
                config=dict(run.config),
            )
            self._write_sidecar(
                state, id=run.id, experiment=run.experiment_name, writer=self._writer, metrics={}
            )
            header = pb.Record()
            header.header.version_info.producer = f"{wandb.__version__}+mltrack"
            header.header.version_info.min_consumer = "0.70.0"
            self._append(state, header, self._run_record(state))
            self._open[run.id] = state
            self._folders[run.id] = folder

    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: mltrack.MetricBatch) -> None:
        """One history row per step and time (every metric logged with them), then the summary's latest values."""
        with self._lock, _errors(f"logging metrics of run {run_id}"):
            state = self._writable(run_id)
            keys = [self._key(state, name, context) for name, context in batch.keys]
            start = state.start.timestamp()
            encoded = [records.history_key(key) for key in keys]
            bodies = records.history_bodies(
                encoded, batch.key_index, batch.steps, batch.values, batch.timestamps, start
            )
            latest = {keys[index]: value for index, value in zip(batch.key_index, batch.values)}
            last_step = batch.steps[-1] if len(batch.steps) else 0
            last_time = batch.timestamps[-1] if len(batch.timestamps) else start
            if not bodies:
                return
            summary = pb.Record()
            for key, number in [
                ("_step", last_step),
                ("_timestamp", last_time),
                ("_runtime", max(0.0, last_time - start)),
                *latest.items(),
            ]:
                item = summary.summary.update.add()
                item.key = key
                item.value_json = _number_json(float(number)) if key != "_step" else str(int(number))
            self._append(state, *bodies, summary)

    def _key(self, state: _OpenRun, name: str, context: Any) -> str:
        """The history key of a metric; a new one with a context is stored in the sidecar first."""
        pairs = tuple(sorted(dict(context).items()))
        key = state.keys.get((name, pairs))
        if key is None:
            key = final_metric_key(name, pairs)
            state.keys[(name, pairs)] = key
            if pairs or key.startswith("_"):
                metrics = dict(state.log.sidecar.get("metrics", {}))
                metrics[key] = [name, to_plain(dict(pairs))]
                self._write_sidecar(state, metrics=metrics)
        return key

    @mltrack.hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """A config update record: keys added or replaced."""
        with self._lock, _errors(f"logging params of run {run_id}"):
            state = self._writable(run_id)
            rec = pb.Record()
            for key, value in params.items():
                state.config[str(key)] = to_plain(value)
                item = rec.config.update.add()
                item.key = str(key)
                item.value_json = json.dumps(to_plain(value), ensure_ascii=False)
            self._append(state, rec)

    @mltrack.hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """The run record again, with the tags added (how W&B itself records a change of tags)."""
        with self._lock, _errors(f"tagging run {run_id}"):
            state = self._writable(run_id)
            state.tags = [*state.tags, *(t for t in tags if t not in state.tags)]
            self._append(state, self._run_record(state))

    @mltrack.hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: mltrack.ModelArtifact) -> None:
        """Copy the file under ``<run folder>/artifacts`` and record it as a W&B artifact."""
        with self._lock, _errors(f"storing artifact {artifact.name!r} of run {run_id}"):
            state = self._writable(run_id)
            target = artifact_path(state.log.folder / ARTIFACTS, artifact.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.{os.getpid()}.part")
            shutil.copyfile(artifact.file_path, staged)
            os.replace(staged, target)  # a reader sees the old file or the new one, never half
            md5 = hashlib.md5()
            with target.open("rb") as source:
                for chunk in iter(lambda: source.read(2**20), b""):
                    md5.update(chunk)
            digest = base64.b64encode(md5.digest()).decode()
            rec = pb.Record()
            art = rec.artifact
            art.run_id = state.log.run_id
            art.project = state.project
            if self.settings.entity:
                art.entity = self.settings.entity
            art.type = artifact.artifact_type.value
            art.name = artifact_collection(artifact.name)
            manifest = hashlib.md5(b"wandb-artifact-manifest-v1\n")
            manifest.update(f"{artifact.name}:{digest}\n".encode())
            art.digest = manifest.hexdigest()
            art.digest_algorithm = "MANIFEST_MD5"
            if artifact.metadata:
                art.metadata = json.dumps(to_plain(artifact.metadata), ensure_ascii=False)
            art.aliases.append("latest")
            art.finalize = True
            art.client_id = "".join(secrets.choice(_ID_CHARS) for _ in range(128))
            art.sequence_client_id = "".join(secrets.choice(_ID_CHARS) for _ in range(128))
            art.manifest.version = 1
            art.manifest.storage_policy = "wandb-storage-policy-v1"
            layout = art.manifest.storage_policy_config.add()
            layout.key, layout.value_json = "storageLayout", json.dumps("V2")
            entry = art.manifest.contents.add()
            entry.path = artifact.name
            entry.digest = digest
            entry.size = target.stat().st_size
            entry.local_path = str(target)
            for key, value in (("sha256", artifact.sha256), ("mltrack_type", artifact.artifact_type.value)):
                if value is not None:
                    extra = entry.extra.add()
                    extra.key, extra.value_json = key, json.dumps(value)
            self._append(state, rec)

    @mltrack.hookimpl
    def mltrack_finish_run(
        self,
        run_id: str,
        status: mltrack.ExperimentStatus,
        end_time: datetime,
        final_metrics: Mapping[str, float],
    ) -> None:
        """Final metrics into the summary, then the exit record; the log is synced to disk."""
        with self._lock, _errors(f"finishing run {run_id}"):
            state = self._writable(run_id)
            status = ExperimentStatus(status)
            self._write_sidecar(state, end_time=end_time.astimezone(timezone.utc).isoformat())
            recs = []
            if final_metrics:
                summary = pb.Record()
                for key, value in final_metrics.items():
                    item = summary.summary.update.add()
                    item.key = str(key)
                    item.value_json = _number_json(float(value))
                recs.append(summary)
            exit_rec = pb.Record()
            exit_rec.exit.exit_code = EXIT_CODES[status]
            exit_rec.exit.runtime = max(0, int((end_time - state.start).total_seconds()))
            recs.append(exit_rec)
            self._append(state, *recs)
            with contextlib.suppress(OSError):
                os.fsync(state.handle.fileno())
            state.handle.close()
            self._open.pop(run_id, None)
            if self.settings.online:
                self.uploads.start(run_id, state.log.folder)

    @mltrack.hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        """Continue the run in a new folder ``offline-run-<now>-<W&B id>``, as W&B's own resume does
        offline (its run record marked ``resumed``); reads merge the run's folders into one run."""
        with self._lock, _errors(f"resuming run {run_id}"):
            old = self._open.pop(run_id, None)
            if old is not None:
                old.handle.close()
            found = self._read(run_id)
            if found is None:
                raise RunNotFoundError(f"wandb: no run {run_id!r} under {self.runs_dir}")
            now = datetime.now(timezone.utc)
            folder = self.runs_dir / f"offline-run-{now.astimezone():%Y%m%d_%H%M%S}-{found.run_id}"
            latest = found.folder.name.split("run-", 1)[1]
            while folder.exists() or folder.name.split("run-", 1)[1] <= latest:  # after every earlier one
                now += timedelta(seconds=1)
                folder = self.runs_dir / f"offline-run-{now.astimezone():%Y%m%d_%H%M%S}-{found.run_id}"
            (folder / "files").mkdir(parents=True)
            parsed = RunLog(folder, found.run_id)
            state = _OpenRun(
                log=parsed,
                handle=parsed.path.open("ab"),
                offset=0,
                num=0,
                start=found.start or now,
                project=found.project,
                name=found.name,
                notes=found.notes,
                tags=list(found.tags),
                config={k: v for k, v in found.config.items() if k != "_wandb"},
            )
            sidecar = {k: v for k, v in found.sidecar.items() if k != "end_time"}
            self._write_sidecar(state, **{**sidecar, "writer": self._writer})
            for key, (name, context) in state.log.sidecar.get("metrics", {}).items():
                state.keys[(name, tuple(sorted(context.items())))] = key
            header = pb.Record()
            header.header.version_info.producer = f"{wandb.__version__}+mltrack"
            header.header.version_info.min_consumer = "0.70.0"
            run_record = self._run_record(state)
            run_record.run.resumed = True
            self._append(state, header, run_record)
            self._open[run_id] = state
            self._folders[run_id] = folder

    @mltrack.hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run's folders (one per resume): logs, sidecars and artifact copies."""
        with self._lock, _errors(f"deleting run {run_id}"):
            state = self._open.pop(run_id, None)
            if state is not None:
                state.handle.close()
            for folder in self._segments(run_id):
                shutil.rmtree(folder, ignore_errors=True)
                self._logs.pop(folder, None)
            self._folders.pop(run_id, None)

    # --- reads --------------------------------------------------------------------------

    def _read(self, run_id: str) -> RunLog | None:
        """The run with exactly mltrack id ``run_id``, read to its end (every folder of a resumed
        run, merged); None if there is none."""
        logs = [log for folder in self._segments(run_id) if (log := self._log(folder)) is not None]
        return merge_segments(logs) if logs else None

    @mltrack.hookimpl
    def mltrack_list_runs(self, run_filter: mltrack.RunFilter) -> list[mltrack.ExperimentSummary]:
        """Every run folder under ``<root>/wandb`` matching the filter, newest first."""
        with self._lock, _errors("listing runs"):
            runs = [s for s in (found.summary_of() for found in self._scan()) if run_filter.matches(s)]
        runs.sort(key=lambda s: s.start_time, reverse=True)
        return runs[: run_filter.limit] if run_filter.limit is not None else runs

    @mltrack.hookimpl
    def mltrack_get_run(self, run_id: str) -> mltrack.ExperimentSummary | None:
        """The run with exactly this id, or None."""
        with self._lock, _errors(f"reading run {run_id}"):
            found = self._read(run_id)
            return None if found is None else found.summary_of()

    @mltrack.hookimpl
    def mltrack_get_metrics(
        self, run_id: str, names: Sequence[str] | None
    ) -> list[mltrack.MetricSeries] | None:
        """The history of each metric, sorted by step, a step logged again keeping its last value."""
        with self._lock, _errors(f"reading metrics of run {run_id}"):
            found = self._read(run_id)
            if found is None:
                return None
            series = SeriesBuilder(names)
            for key, (steps, values, stamps) in found.history.items():
                name, context = found.metric_name(key)
                series.add(name, context, steps, values, stamps)
            return series.series()

    @mltrack.hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[mltrack.ModelArtifact] | None:
        """The run's artifacts (the last logged under each name), each at its stored copy."""
        with self._lock, _errors(f"listing artifacts of run {run_id}"):
            found = self._read(run_id)
            if found is None:
                return None
            out = []
            for name, info in sorted(found.artifacts.items()):
                path = Path(info["local_path"])
                if not path.is_file():
                    path = found.folder / ARTIFACTS / name
                    if not path.is_file():
                        continue
                try:
                    kind = ArtifactType(info["type"])
                except ValueError:
                    kind = ArtifactType.OTHER
                out.append(
                    mltrack.ModelArtifact(
                        name=name,
                        artifact_type=kind,
                        file_path=str(path),
                        metadata=info["metadata"],
                        size=info["size"],
                        sha256=info["sha256"],
                    )
                )
            return out

    # --- uploads, health, closing ---------------------------------------------------------

    def wait_for_uploads(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (default: the backend's timeout, ``MLTRACK_WANDB_TIMEOUT``)
        for uploads, then stop the rest (counted as failed). True if every upload ended by itself."""
        with self._lock:
            return self.uploads.wait(self.settings.timeout if timeout is None else timeout)

    @mltrack.hookimpl
    def mltrack_health(self) -> mltrack.HealthStatus:
        """Store folder, runs, and (online) uploads running, done and failed; never raises."""
        with self._lock:
            self.uploads.reap()
            issues = list(self.settings.store.problems())
            issues += [
                f"W&B {failure}: run `wandb sync <run folder>` again once the server answers "
                "(check WANDB_BASE_URL and WANDB_API_KEY)"
                for failure in self.uploads.failures
            ]
            details: dict[str, Any] = {
                "root": str(self.root),
                "runs_folder": str(self.runs_dir),
                "mode": "online" if self.settings.online else "offline",
                "open_runs": len(self._open),
                "wandb_version": wandb.__version__,
            }
            if self.settings.online:
                details.update(
                    uploads_running=len(self.uploads.running),
                    uploads_done=self.uploads.done,
                    upload_failures=len(self.uploads.failures),
                    timeout=self.settings.timeout,
                )
        return health_status("wandb", issues, **details)

    def close(self) -> None:
        """Close open logs (their runs stay RUNNING) and wait, bounded by the timeout, for uploads."""
        with self._lock:
            for state in self._open.values():
                with contextlib.suppress(OSError):
                    state.handle.close()
            self._open.clear()
        if self.uploads.running:
            self.wait_for_uploads()


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """File-system and format errors as mltrack's typed errors, saying what failed."""
    try:
        yield
    except (BackendError, RunNotFoundError):
        raise
    except Exception as exc:
        raise BackendError(f"wandb backend: {what}: {type(exc).__name__}: {exc}") from exc
