"""Reads of an MLflow server through its REST API, without importing mlflow.

``mltrack ls`` against a tracking server used to spend most of its time importing mlflow
(1-3 s here). Reads now go through :mod:`mltrack_mlflow.rest`; these tests hold it to what
MLflow's own client reads from the same real server, and check what it does when it cannot.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from mltrack.config import BackendConfig
from mltrack.errors import BackendError
from mltrack.models import ExperimentRun, ExperimentStatus, MetricBatch, RunFilter
from mltrack.servers import free_port
from mltrack_mlflow import MlflowProcess
from mltrack_mlflow.backend import MlflowBackend
from mltrack_mlflow.rest import RestReads

from _child import child_env


def _backend(uri: str, tmp_path: Path) -> MlflowBackend:
    options = {"tracking_uri": uri, "artifacts_dir": str(tmp_path / "artifacts")}
    return MlflowBackend.from_config(BackendConfig("mlflow", options=options))


def _batch(name: str, steps: list[int], values: list[float]) -> MetricBatch:
    now = time.time()
    return MetricBatch([(name, ())], [0] * len(steps), steps, values, [now] * len(steps))


def _series(backend: MlflowBackend, run_id: str) -> list[tuple[str, dict[str, Any], list[int], list[str]]]:
    """The run's histories, values as text (NaN equals NaN)."""
    series = backend.mltrack_get_metrics(run_id, None) or []
    return sorted(
        (s.name, dict(s.context), list(s.steps), [repr(float(v)) for v in s.values]) for s in series
    )


@pytest.fixture
def written(mlflow_server: MlflowProcess, tmp_path: Path) -> Iterator[MlflowBackend]:
    """Runs of every shape the mapping knows, on a real server: long (split) config and
    description, odd values, finished, failed, running, and one MLflow wrote itself."""
    backend = _backend(mlflow_server.tracking_uri, tmp_path)
    suffix = f"{time.time_ns():x}"[-8:]
    runs = [
        ExperimentRun(
            id=f"a{suffix}" + "0" * 15,
            experiment_name=f"rest-{suffix}",
            config={"long": "é" * 9000, "nested": {"k": [1, None]}, "lr": 0.001},
            tags=["t" * 250, "a=b, c!"],
            description="d" * 6000,
        ),
        ExperimentRun(id=f"b{suffix}" + "0" * 15, experiment_name=f"rest-{suffix}", name="second"),
        ExperimentRun(id=f"c{suffix}" + "0" * 15, experiment_name=f"other-{suffix}"),
    ]
    for run in runs:
        backend.mltrack_create_run(run)
        backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1, 2], [1.0, math.nan, 0.25]))
    backend.mltrack_log_metrics(runs[0].id, _batch("reward", [0], [math.inf]))
    now = runs[0].start_time
    backend.mltrack_finish_run(runs[0].id, ExperimentStatus.COMPLETED, now, {"loss": 0.25, "big": 1e308})
    backend.mltrack_finish_run(runs[1].id, ExperimentStatus.FAILED, now, {})
    # runs[2] stays RUNNING (its writer, this process, lives)

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.tracking_uri)
    native = client.create_run(
        client.create_experiment(f"native-{suffix}"), run_name="by-mlflow", tags={"team": "rl"}
    )
    client.log_param(native.info.run_id, "lr", "0.01")
    client.log_metric(native.info.run_id, "acc", 0.5, step=1)
    client.set_terminated(native.info.run_id, "KILLED")
    yield backend
    backend.close()


def test_reads_of_a_server_equal_what_mlflows_own_store_reads(written: MlflowBackend) -> None:
    assert isinstance(written.access.reads, RestReads)  # the default for a plain server
    rest_list = written.mltrack_list_runs(RunFilter())
    rest_runs = {s.experiment_id: written.mltrack_get_run(s.experiment_id) for s in rest_list}
    rest_failed = written.mltrack_list_runs(RunFilter(status=ExperimentStatus.FAILED))
    rest_series = {s.experiment_id: _series(written, s.experiment_id) for s in rest_list}

    written.access._reads_obj = written.store  # MLflow's own REST store from here on
    written.access.ids.clear()
    assert written.mltrack_list_runs(RunFilter()) == rest_list
    assert {s.experiment_id: written.mltrack_get_run(s.experiment_id) for s in rest_list} == rest_runs
    assert written.mltrack_list_runs(RunFilter(status=ExperimentStatus.FAILED)) == rest_failed
    assert {s.experiment_id: _series(written, s.experiment_id) for s in rest_list} == rest_series

    # ... and what both read is what was written.
    by_name = {(s.experiment_name, s.name): s for s in rest_list}
    first = next(s for s in rest_list if s.experiment_id.startswith("a"))
    assert first.config == {"long": "é" * 9000, "nested": {"k": [1, None]}, "lr": 0.001}
    assert first.description == "d" * 6000 and set(first.tags) == {"t" * 250, "a=b, c!"}
    assert first.final_metrics == {"loss": 0.25, "big": 1e308}
    assert first.status is ExperimentStatus.COMPLETED
    statuses = {
        s.name: s.status
        for s in rest_list
        if s.experiment_name and s.experiment_name.endswith(first.experiment_name[-8:])
    }
    assert statuses["second"] is ExperimentStatus.FAILED and len(rest_failed) >= 1
    assert rest_series[first.experiment_id] == [
        ("loss", {}, [0, 1, 2], ["1.0", "nan", "0.25"]),
        ("reward", {}, [0], ["inf"]),
    ]
    native = next(
        s for (exp, name), s in by_name.items() if name == "by-mlflow" and exp and exp.startswith("native-")
    )
    assert (native.config, native.final_metrics, native.status) == (
        {"lr": 0.01},
        {"acc": 0.5},
        ExperimentStatus.INTERRUPTED,
    )


def test_mltrack_ls_and_show_on_a_server_do_not_import_mlflow(
    written: MlflowBackend, mlflow_server: MlflowProcess
) -> None:
    code = (
        "import sys\n"
        "from mltrack.cli.app import cli\n"
        "try:\n"
        "    cli(['ls', '--json'], standalone_mode=False)\n"
        "    cli(['show', sys.argv[1]], standalone_mode=False)\n"
        "finally:\n"
        "    print('MLFLOW_IMPORTED', 'mlflow' in sys.modules, file=sys.stderr)\n"
    )
    env = child_env(
        {"ML_TRACKING_BACKEND": "mlflow", "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri}, clean=True
    )
    second = next(s for s in written.mltrack_list_runs(RunFilter()) if s.name == "second")
    proc = subprocess.run(
        [sys.executable, "-c", code, second.experiment_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLFLOW_IMPORTED False" in proc.stderr
    listing, shown = proc.stdout.split("\n]\n", 1)
    listed = {r["id"] for r in json.loads(listing + "]")}
    assert f"run {second.experiment_id}" in shown and "status: failed" in shown
    assert "loss" in shown  # its history, read through the REST API too

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    native_runs = client.search_runs(experiments, max_results=1000)
    expected = {r.data.tags.get("mltrack.run_id", r.info.run_id) for r in native_runs}
    assert listed == expected and len(listed) >= 4


def test_an_unreachable_server_is_a_typed_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    port = free_port()
    backend = _backend(f"http://127.0.0.1:{port}", tmp_path)
    with pytest.raises(BackendError, match=f"listing runs .*cannot reach http://127.0.0.1:{port}"):
        backend.mltrack_list_runs(RunFilter())


def test_settings_the_rest_reader_does_not_speak_send_reads_through_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("MLFLOW_TRACKING_AUTH", "custom-plugin"), ("MLFLOW_TRACKING_AWS_SIGV4", "true")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            backend = _backend(f"http://127.0.0.1:{free_port()}", tmp_path)
            assert not isinstance(backend.access.reads, RestReads), name
    assert isinstance(_backend(f"http://127.0.0.1:{free_port()}", tmp_path).access.reads, RestReads)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)}
        )
        if len(self.seen) == 1:  # a transient error first: retried, as MLflow's client does
            self.send_response(503)
            self.end_headers()
            return
        answer = json.dumps({"experiments": [{"experiment_id": "7", "name": "e"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_credentials_are_sent_and_transient_errors_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    _Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = RestReads(f"http://127.0.0.1:{server.server_port}").search_experiments(max_results=5)
    finally:
        server.shutdown()
        server.server_close()
    assert [(e.experiment_id, e.name) for e in page] == [("7", "e")] and page.token is None
    expected = "Basic " + base64.b64encode(b"ana:s3cret").decode()
    assert [s["auth"] for s in _Recorder.seen] == [expected, expected]
    assert _Recorder.seen[-1] == {
        "path": "/api/2.0/mlflow/experiments/search",
        "auth": expected,
        "body": {"view_type": "ACTIVE_ONLY", "max_results": 5},
    }
