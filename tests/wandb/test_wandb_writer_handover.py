"""A run another process started (a writer process that died and was replaced) is taken over whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mltrack.authoring import WriterRecord
from mltrack.config import BackendConfig
from mltrack.models import ExperimentRun, ExperimentStatus, MetricBatch, RunFilter
from mltrack_wandb.backend import WandbBackend
from mltrack_wandb.runlog import SIDECAR


def _backend(root: Path) -> WandbBackend:
    return WandbBackend.from_config(BackendConfig("wandb", storage_path=str(root)))


def _batch(steps: range) -> MetricBatch:
    now = time.time()
    return MetricBatch(
        keys=[("loss", ())],
        key_index=[0] * len(steps),
        steps=list(steps),
        values=[float(s) for s in steps],
        timestamps=[now] * len(steps),
    )


def test_a_new_writer_takes_over_a_dead_writers_run_with_a_torn_tail(wandb_root: Path) -> None:
    first = _backend(wandb_root)
    run = ExperimentRun(id="ab" * 12, experiment_name="handover")
    first.mltrack_create_run(run)
    first.mltrack_log_metrics(run.id, _batch(range(0, 10)))
    first.close()
    (folder,) = (wandb_root / "wandb").glob(f"offline-run-*-{run.id}")
    # The first writer died mid-write: a dead process in the sidecar, half a record at the end.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sidecar = json.loads((folder / SIDECAR).read_text())
    sidecar["writer"] = WriterRecord(sidecar["writer"]["host"], dead.pid, "1").to_json()
    (folder / SIDECAR).write_text(json.dumps(sidecar))
    with (folder / f"run-{run.id}.wandb").open("ab") as log:
        log.write(b"\x01\x02\x03\x04\x40\x00\x01half a record")
    assert _backend(wandb_root).mltrack_get_run(run.id).status is ExperimentStatus.CRASHED

    second = _backend(wandb_root)  # the replacement writer goes on with the run
    second.mltrack_log_metrics(run.id, _batch(range(10, 20)))
    reader = _backend(wandb_root)
    assert reader.mltrack_get_run(run.id).status is ExperimentStatus.RUNNING
    second.mltrack_finish_run(run.id, ExperimentStatus.COMPLETED, run.start_time, {})
    (series,) = reader.mltrack_get_metrics(run.id, None)
    assert list(series.steps) == list(range(20))
    assert [s.status for s in reader.mltrack_list_runs(RunFilter())] == [ExperimentStatus.COMPLETED]
