"""The MLflow backend object in this process: what the conformance suite does not pin down.

Crash detection, hard deletion, exact round trips of what MLflow cannot hold as given,
runs MLflow wrote itself, health when the store is down, and configuration.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mltrack.config import BackendConfig
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    MetricBatch,
    ModelArtifact,
    RunFilter,
)
from mltrack_mlflow import mapping as m
from mltrack_mlflow.backend import MlflowBackend
from mltrack_mlflow.processes import free_port
from mltrack_mlflow.settings import MlflowSettings


@pytest.fixture
def backend(mlflow_dir: Path) -> Iterator[MlflowBackend]:
    b = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(mlflow_dir)))
    yield b
    b.close()


def _batch(
    name: str, steps: list[int], values: list[float], context: dict[str, str] | None = None
) -> MetricBatch:
    ctx = tuple(sorted((context or {}).items()))
    now = time.time()
    return MetricBatch(
        keys=[(name, ctx)],
        key_index=[0] * len(steps),
        steps=steps,
        values=values,
        timestamps=[now + i * 0.001 for i in range(len(steps))],
    )


def _run(run_id: str, **kwargs: object) -> ExperimentRun:
    return ExperimentRun(id=run_id, experiment_name=str(kwargs.pop("experiment", "unit")), **kwargs)  # type: ignore[arg-type]


def _rows(db: Path, table: str, mlflow_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_uuid = ?", (mlflow_id,)).fetchone()[0]
        )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_whose_writer_died_reads_crashed_and_mlflow_shows_it_failed(backend: MlflowBackend) -> None:
    run = _run("c" * 24)
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1, 2], [3.0, 2.0, 1.0]))
    mlflow_id = backend._ids[run.id]
    backend._log_tags(mlflow_id, {m.WRITER_TAG: f"{socket.gethostname()} {_dead_pid()} 0"})
    backend.close()  # this backend no longer writes the run: only the tag says who does
    summary = backend.mltrack_get_run(run.id)
    assert summary is not None
    assert summary.status is ExperimentStatus.CRASHED
    assert summary.end_time is not None
    assert summary.final_metrics == {"loss": 1.0}
    stored = backend.store.get_run(mlflow_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags[m.STATUS_TAG] == "crashed"
    assert backend.mltrack_list_runs(RunFilter(status=ExperimentStatus.CRASHED))[0].experiment_id == run.id


def test_a_run_read_running_just_before_its_writer_finished_and_died_stays_completed(
    backend: MlflowBackend, mlflow_dir: Path
) -> None:
    """A reader's snapshot can be older than the writer's finish: when it judges the writer gone
    (it finished, then exited), the run is read again instead of being marked CRASHED over its
    COMPLETED (seen in CI: two processes writing one store, a reader among them, two completed
    runs read CRASHED afterwards)."""
    run = _run("f" * 24)
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1], [2.0, 1.0]))
    mlflow_id = backend._ids[run.id]
    dead = f"{socket.gethostname()} {_dead_pid()} 0"
    backend._log_tags(mlflow_id, {m.WRITER_TAG: dead})
    reader = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(mlflow_dir)))
    try:
        stale = reader.access.get_run(mlflow_id)  # RUNNING, by a writer that is gone by the time it judges
        backend.mltrack_finish_run(
            run.id, ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {"loss": 1.0}
        )
        summary = reader._summary(stale, {})
    finally:
        reader.close()
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.final_metrics == {"loss": 1.0}
    stored = backend.store.get_run(mlflow_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags[m.STATUS_TAG] == "completed"


def test_a_crashed_runs_final_metrics_are_the_stores_latest_not_a_stale_reads(
    backend: MlflowBackend, mlflow_dir: Path
) -> None:
    """Points can reach a run after its writer died (the spool's recovery delivers them) and
    after a reader's snapshot: the CRASHED mark stores the final metrics the store holds then."""
    run = _run("b2" * 12)
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1], [2.0, 1.0]))
    mlflow_id = backend._ids[run.id]
    backend._log_tags(mlflow_id, {m.WRITER_TAG: f"{socket.gethostname()} {_dead_pid()} 0"})
    reader = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(mlflow_dir)))
    try:
        stale = reader.access.get_run(mlflow_id)
        backend.mltrack_log_metrics(run.id, _batch("loss", [2], [0.25]))  # delivered after that read
        summary = reader._summary(stale, {})
    finally:
        reader.close()
    assert summary.status is ExperimentStatus.CRASHED
    assert summary.final_metrics == {"loss": 0.25}
    backend.close()
    again = backend.mltrack_get_run(run.id)
    assert again is not None and again.final_metrics == {"loss": 0.25}


def test_run_written_on_another_host_or_by_a_live_process_stays_running(backend: MlflowBackend) -> None:
    for run_id, writer in (("d" * 24, "elsewhere 1 0"), ("e" * 24, None)):
        backend.mltrack_create_run(_run(run_id))
        if writer is not None:
            backend._log_tags(backend._ids[run_id], {m.WRITER_TAG: writer})
    backend.close()
    assert backend.mltrack_get_run("d" * 24).status is ExperimentStatus.RUNNING  # type: ignore[union-attr]
    assert backend.mltrack_get_run("e" * 24).status is ExperimentStatus.RUNNING  # type: ignore[union-attr]


def test_delete_purges_the_run_its_rows_and_its_artifact_files(
    backend: MlflowBackend, tmp_path: Path
) -> None:
    run = _run("a1" * 12, tags=["x"])
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1], [1.0, 0.5]))
    source = tmp_path / "model.zip"
    source.write_bytes(b"weights")
    backend.mltrack_log_artifact(run.id, ModelArtifact("model.zip", ArtifactType.MODEL, str(source), size=7))
    (stored,) = backend.mltrack_list_artifacts(run.id) or []
    assert Path(stored.file_path).read_bytes() == b"weights"
    mlflow_id = backend._ids[run.id]
    backend.mltrack_delete_run(run.id)
    db = backend.settings.db_path
    assert db is not None
    for table in ("runs", "metrics", "latest_metrics", "params", "tags"):
        assert _rows(db, table, mlflow_id) == 0, table
    assert not Path(stored.file_path).exists()
    assert backend.mltrack_get_run(run.id) is None
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in backend.store.search_experiments(view_type=ViewType.ALL)]
    assert not backend.store.search_runs(experiments, "", ViewType.ALL)


def test_what_mlflow_cannot_hold_as_given_reads_back_exactly(backend: MlflowBackend) -> None:
    config = {
        "long": "é" * 20_000,
        "a/../b": 1,
        "x" * 255: {"deep": {"deeper": [1, {"k": None}]}},
        "with space": 1.5,
        "empty": {},
        "nested": {"": "empty key", "k": {}},
    }
    run = _run("b2" * 12, config=config, tags=["t" * 255, "a=b, c!"], description="d" * 9000)
    backend.mltrack_create_run(run)
    backend.mltrack_log_params(run.id, {"with space": 2.5, "added": [1, 2]})
    names = ["x" * 255, "a,b(c)", "../up", "/lead", "损失", "loss{subset=val}"]
    for i, name in enumerate(names):
        backend.mltrack_log_metrics(run.id, _batch(name, [i], [float(i)]))
    backend.mltrack_log_metrics(run.id, _batch("loss", [0], [7.0], {"subset": "val", "fold": "1"}))
    summary = backend.mltrack_get_run(run.id)
    assert summary is not None
    assert summary.config == {**config, "with space": 2.5, "added": [1, 2]}
    assert set(summary.tags) == {"t" * 255, "a=b, c!"}
    assert summary.description == "d" * 9000
    series = backend.mltrack_get_metrics(run.id, None) or []
    got = {(s.name, tuple(sorted(s.context.items()))): list(s.values) for s in series}
    assert got == {
        **{(name, ()): [float(i)] for i, name in enumerate(names)},
        ("loss", (("fold", "1"), ("subset", "val"))): [7.0],
    }
    stored = backend.store.get_run(backend._ids[run.id])
    # MLflow's params hold the first value (it refuses changes); mltrack's config the last.
    assert stored.data.params["with space"] == "1.5"
    assert stored.data.params["added"] == "[1, 2]"
    assert all(m.valid_key(k) for k in [*stored.data.params, *stored.data.metrics, *stored.data.tags])


def test_a_step_rewritten_in_a_later_batch_reads_as_the_last_write(backend: MlflowBackend) -> None:
    run = _run("f1" * 12)
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch("m", [1, 2, 3], [1.0, 2.0, 3.0]))
    backend.mltrack_log_metrics(run.id, _batch("m", [2], [20.0]))
    backend.mltrack_log_metrics(run.id, _batch("m", [2, 4], [200.0, math.inf]))
    (series,) = backend.mltrack_get_metrics(run.id, ["m"]) or []
    assert list(zip(series.steps, series.values)) == [(1, 1.0), (2, 200.0), (3, 3.0), (4, math.inf)]
    history = backend.store.get_metric_history(backend._ids[run.id], "m")
    assert sorted(p.value for p in history if p.step == 2) == [2.0, 20.0, 200.0]  # MLflow keeps all


def test_runs_mlflow_wrote_itself_are_read_too(backend: MlflowBackend) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(backend.settings.tracking_uri)
    experiment_id = client.create_experiment("native")
    native = client.create_run(experiment_id, run_name="by-mlflow", tags={"team": "rl", "flag": "true"})
    run_id = native.info.run_id
    client.log_param(run_id, "lr", "0.01")
    for step in range(3):
        client.log_metric(run_id, "acc", 0.5 + step / 10, step=step)
    client.set_terminated(run_id, "FINISHED")
    summary = backend.mltrack_get_run(run_id)
    assert summary is not None
    assert summary.experiment_id == run_id
    assert (summary.name, summary.experiment_name) == ("by-mlflow", "native")
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.config == {"lr": 0.01}
    assert summary.final_metrics == {"acc": 0.7}
    assert set(summary.tags) == {"team=rl", "flag"}
    (acc,) = backend.mltrack_get_metrics(run_id, None) or []
    assert list(acc.steps) == [0, 1, 2]
    assert run_id in [s.experiment_id for s in backend.mltrack_list_runs(RunFilter())]


def test_finished_statuses_and_times_are_mlflows_own(backend: MlflowBackend) -> None:
    end = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    for run_id, status, expected in (
        ("01" * 12, ExperimentStatus.COMPLETED, "FINISHED"),
        ("02" * 12, ExperimentStatus.INTERRUPTED, "KILLED"),
        ("03" * 12, ExperimentStatus.CRASHED, "FAILED"),
    ):
        backend.mltrack_create_run(_run(run_id))
        backend.mltrack_finish_run(run_id, status, end, {"score": 1.0})
        info = backend.store.get_run(backend._ids[run_id]).info
        assert (info.status, info.end_time) == (expected, int(end.timestamp() * 1000))
        summary = backend.mltrack_get_run(run_id)
        assert summary is not None and summary.status is status and summary.end_time == end


def test_health_of_a_local_store(backend: MlflowBackend) -> None:
    health = backend.mltrack_health()
    assert health.is_healthy, health.issues
    assert health.details["tracking_uri"] == backend.settings.tracking_uri
    assert health.details["writable"] is True
    assert health.details["mlflow_version"].startswith("3.")


def test_health_returns_unhealthy_when_the_server_is_down(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    down = MlflowBackend.from_config(
        BackendConfig("mlflow", options={"tracking_uri": uri, "artifacts_dir": str(tmp_path)})
    )
    started = time.monotonic()
    health = down.mltrack_health()
    assert time.monotonic() - started < 10
    assert not health.is_healthy
    assert health.details["server_reachable"] is False
    assert uri in health.issues[0]


def test_health_returns_unhealthy_when_the_store_cannot_open(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    broken = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(blocker)))
    health = broken.mltrack_health()
    assert not health.is_healthy
    assert health.issues


def test_settings_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def settings(**kwargs: object) -> MlflowSettings:
        return MlflowSettings.from_backend_config(BackendConfig("mlflow", **kwargs))  # type: ignore[arg-type]

    monkeypatch.chdir(tmp_path)
    default = settings()
    assert default.tracking_uri == f"sqlite:///{tmp_path / 'mlflow_logs' / 'mlflow.db'}"
    assert default.artifacts_dir == str(tmp_path / "mlflow_logs" / "artifacts")
    assert settings(storage_path="runs").db_path == tmp_path / "runs" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555/")
    remote = settings(storage_path="runs")
    assert remote.tracking_uri == "http://127.0.0.1:5555" and remote.is_remote
    assert remote.artifacts_dir == str(tmp_path / "runs" / "artifacts")
    chosen = settings(options={"tracking_uri": "sqlite:///x/y.db", "artifacts_dir": "arts"})
    assert chosen.db_path == tmp_path / "x" / "y.db"
    assert chosen.artifacts_dir == str(tmp_path / "arts")


def test_configure_mlflow_backend_selects_the_backend(tmp_path: Path) -> None:
    from mltrack_mlflow import configure_mlflow_backend

    config = configure_mlflow_backend(tracking_uri=tmp_path / "store", experiment_name="Bot")
    assert config.backends == ("mlflow",)
    assert config.experiment_name == "Bot"
    assert config.backend_options["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def test_importing_the_plugin_does_not_import_mlflow() -> None:
    code = (
        "import sys, json, mltrack_mlflow, mltrack_mlflow.plugin\n"
        "from mltrack.plugins import get_plugin_host\n"
        "reg = get_plugin_host().backends()['mlflow']\n"
        "print(json.dumps([reg.out_of_process, reg.persistent, 'mlflow' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[true, true, false]"


def test_open_ui_serves_mlflows_ui_on_the_store_and_stops_its_process_group(backend: MlflowBackend) -> None:
    import urllib.request

    backend.mltrack_create_run(_run("ab" * 12, experiment="ui"))
    handle = backend.mltrack_open_ui("127.0.0.1", free_port())
    try:
        with urllib.request.urlopen(
            handle.url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui"
        ) as r:
            assert b'"name": "ui"' in r.read().replace(b'"name":"ui"', b'"name": "ui"')
        with urllib.request.urlopen(handle.url + "/") as r:
            assert r.status == 200
    finally:
        handle.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(handle.pid, 0)


def test_bulk_writes_store_exactly_the_rows_log_batch_stores(
    mlflow_dir: Path, mlflow_db_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    other = tmp_path / "log_batch"
    other.mkdir()
    shutil.copyfile(mlflow_db_template, other / "mlflow.db")
    bulk = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(mlflow_dir)))
    assert bulk.bulk_writes
    monkeypatch.setenv("MLTRACK_MLFLOW_BATCH", "0")
    plain = MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(other)))
    assert not plain.bulk_writes
    t = 1_700_000_000.0
    batches = [
        MetricBatch(
            keys=[("loss", ()), ("odd", (("subset", "val"),))],
            key_index=[0, 0, 0, 1, 1, 1, 1],
            steps=[3, 1, 2, 0, 1, 2, 3],
            values=[0.3, 0.1, 0.2, math.nan, math.inf, -math.inf, 1.5],
            timestamps=[t, t + 0.001, t + 0.002, t, t, t, t],
        ),
        MetricBatch(
            keys=[("loss", ())], key_index=[0, 0], steps=[3, 2], values=[0.3, 9.0], timestamps=[t, t]
        ),
        MetricBatch(keys=[("loss", ())], key_index=[0], steps=[1], values=[5.0], timestamps=[t + 5]),
    ]
    for backend in (bulk, plain):
        backend.mltrack_create_run(_run("9" * 24))
        for batch in batches:
            backend.mltrack_log_metrics("9" * 24, batch)

    def rows(backend: MlflowBackend) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        db = backend.settings.db_path
        with sqlite3.connect(str(db)) as conn:
            metrics = conn.execute(
                "SELECT key, value, timestamp, step, is_nan FROM metrics ORDER BY 1, 2, 3, 4, 5"
            )
            latest = conn.execute("SELECT key, value, timestamp, step, is_nan FROM latest_metrics ORDER BY 1")
            return metrics.fetchall(), latest.fetchall()

    assert rows(bulk) == rows(plain)
    assert len(rows(bulk)[0]) == 9  # the repeated (step 3, 0.3) point is stored once, as MLflow does
    for backend in (bulk, plain):
        got = {
            (s.name, tuple(s.context.items())): list(zip(s.steps, s.values))
            for s in backend.mltrack_get_metrics("9" * 24, None) or []
        }
        assert got[("loss", ())] == [(1, 5.0), (2, 9.0), (3, 0.3)]
        odd = got[("odd", (("subset", "val"),))]
        assert math.isnan(odd[0][1]) and odd[1:] == [(1, math.inf), (2, -math.inf), (3, 1.5)]
        backend.close()


def test_a_store_that_cannot_take_runs_fails_create_run_in_the_trainer(tmp_path: Path) -> None:
    import mltrack
    from mltrack.errors import BackendError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    mltrack.configure_backend("mlflow", storage_path=str(blocker / "store"))
    with pytest.raises(BackendError, match="not writable"):
        mltrack.start_run("refused")
