"""mltrack-jsonl: runs as JSON files on disk, a folder per run (the backend of docs/plugins/README.md):
<root>/<run id>/run.json           the run (summary, artifacts, who writes it), replaced whole
<root>/<run id>/metrics.jsonl      one line per metric of each batch, appended
<root>/<run id>/artifacts/<name>   the copies of logged files"""

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

import mltrack
from mltrack.authoring import SeriesBuilder, StoreDirectory, WriterRecord, artifact_path, run_status
from mltrack.config import BackendConfig, parse_backend_options


@attrs.frozen(kw_only=True)
class JsonlOptions:
    """The options of ``configure_backend("jsonl", ...)``: a mistyped one is an error."""

    root: str | None = attrs.field(default=None, metadata={"help": "store folder (default: ML_STORAGE_PATH)"})


def store(config: BackendConfig) -> StoreDirectory:
    """The store folder: the ``root`` option, else ``ML_STORAGE_PATH``, else ``./jsonl_logs``."""
    options = parse_backend_options("jsonl", JsonlOptions, config.options)
    return StoreDirectory.resolve(config, "./jsonl_logs", option=options.root, option_name="root")


class JsonlBackend(mltrack.Backend):
    """The backend: each ``@mltrack.hookimpl`` method is a hook, checked by mypy against ``mltrack.Backend``."""

    def __init__(self, config: BackendConfig) -> None:
        self.store = store(config)
        self.root = self.store.open()  # created for a writer; a reader needs it to exist

    def _read(self, run_id: str) -> dict[str, Any] | None:
        path = self.root / run_id / "run.json"  # run ids are hex: anything else (a path) is no run
        return json.loads(path.read_text()) if run_id.isalnum() and path.is_file() else None

    def _write(self, run_id: str, run: dict[str, Any]) -> None:
        temp = self.root / run_id / f"run.json.{os.getpid()}"
        temp.write_text(json.dumps(run, default=datetime.isoformat))
        os.replace(temp, self.root / run_id / "run.json")  # readers see the old file or the new

    def _update(self, run_id: str, change: Callable[[dict[str, Any]], object]) -> None:
        run = self._read(run_id)
        if run is None:
            raise mltrack.RunNotFoundError(f"jsonl: no run {run_id!r} in {self.root}")
        change(run)
        self._write(run_id, run)

    def _summary(self, run: dict[str, Any]) -> mltrack.ExperimentSummary:
        fields = {key: value for key, value in run.items() if key not in ("writer", "artifacts")}
        fields["start_time"] = datetime.fromisoformat(run["start_time"])
        fields["end_time"] = run["end_time"] and datetime.fromisoformat(run["end_time"])
        writer = WriterRecord.from_json(run["writer"])  # a RUNNING run whose writer is gone: CRASHED
        fields["status"] = run_status(mltrack.ExperimentStatus(run["status"]), writer)
        return mltrack.ExperimentSummary(**fields)

    @mltrack.hookimpl
    def mltrack_create_run(self, run: mltrack.ExperimentRun) -> None:
        (self.root / run.id / "artifacts").mkdir(parents=True, exist_ok=True)
        base = mltrack.ExperimentSummary(run.id, run.run_name, "running", run.start_time, config=run.config)
        extra = {"tags": run.tags, "experiment_name": run.experiment_name, "description": run.description}
        writer = WriterRecord.current().to_json()  # this process writes the run (crash detection)
        self._write(run.id, {**attrs.asdict(base), **extra, "writer": writer, "artifacts": {}})

    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: mltrack.MetricBatch) -> None:
        keys = ("name", "context", "steps", "values", "timestamps")
        lines = "".join(json.dumps(dict(zip(keys, group))) + "\n" for group in batch.groups())
        with (self.root / run_id / "metrics.jsonl").open("a") as out:
            out.write(lines)

    @mltrack.hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._update(run_id, lambda run: run["config"].update(params))

    @mltrack.hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        self._update(run_id, lambda run: run.update(tags=sorted({*run["tags"], *tags})))

    @mltrack.hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: mltrack.ModelArtifact) -> None:
        target = artifact_path(self.root / run_id / "artifacts", artifact.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact.file_path, target)  # a copy: the caller may overwrite the file next
        stored = attrs.asdict(attrs.evolve(artifact, file_path=str(target)))
        self._update(run_id, lambda run: run["artifacts"].update({artifact.name: stored}))

    @mltrack.hookimpl
    def mltrack_finish_run(
        self,
        run_id: str,
        status: mltrack.ExperimentStatus,
        end_time: datetime,
        final_metrics: Mapping[str, float],
    ) -> None:
        final = {"status": status, "end_time": end_time}
        self._update(run_id, lambda run: run.update(final) or run["final_metrics"].update(final_metrics))

    @mltrack.hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:  # running again, written by this process now
        again = {"status": "running", "end_time": None, "writer": WriterRecord.current().to_json()}
        self._update(run_id, lambda run: run.update(again))

    @mltrack.hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)

    @mltrack.hookimpl
    def mltrack_list_runs(self, run_filter: mltrack.RunFilter) -> list[mltrack.ExperimentSummary]:
        runs = [self._summary(run) for path in self.root.iterdir() if (run := self._read(path.name))]
        runs = sorted(filter(run_filter.matches, runs), key=lambda s: s.start_time, reverse=True)
        return runs[: run_filter.limit]  # a limit of None keeps them all

    @mltrack.hookimpl
    def mltrack_get_run(self, run_id: str) -> mltrack.ExperimentSummary | None:
        return None if (run := self._read(run_id)) is None else self._summary(run)

    @mltrack.hookimpl
    def mltrack_get_metrics(
        self, run_id: str, names: Sequence[str] | None
    ) -> list[mltrack.MetricSeries] | None:
        if self._read(run_id) is None:
            return None  # an unknown run is None, never an empty list
        path, found = self.root / run_id / "metrics.jsonl", SeriesBuilder(names)
        for line in path.read_text().splitlines(keepends=True) if path.exists() else []:
            if line.endswith("\n"):  # not a line still being written
                found.add(**json.loads(line))
        return found.series()

    @mltrack.hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[mltrack.ModelArtifact] | None:
        run = self._read(run_id)
        return None if run is None else [mltrack.ModelArtifact(**a) for a in run["artifacts"].values()]

    @mltrack.hookimpl
    def mltrack_health(self) -> mltrack.HealthStatus:
        return self.store.health("jsonl", runs=sum(1 for _ in self.root.iterdir()))


@mltrack.hookimpl
def mltrack_register_backends(register: mltrack.RegisterBackend) -> None:
    """Announce the ``jsonl`` backend; its preflight refuses a run where the store cannot take one."""
    register("jsonl", JsonlBackend, options=JsonlOptions, preflight=lambda config: store(config).preflight())
