"""System metrics (mltrack-system): sampled into every run off the training thread, on real stores."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

import mltrack
from mltrack.factory import experiment_repository, health_sync, open_repository
from mltrack_system import THREAD_NAME
from mltrack_system.probe import Probe

from _child import run_python

CPU = "system/cpu_utilization_percentage"
PROCESS_CPU = "system/process_cpu_utilization_percentage"
RSS = "system/process_memory_rss_megabytes"
MEMORY = "system/system_memory_usage_percentage"
DISK = "system/disk_usage_percentage"
DISK_READ = "system/disk_read_megabytes"
NET_IN = "system/network_receive_megabytes"
NET_OUT = "system/network_transmit_megabytes"
CORE = (CPU, PROCESS_CPU, RSS, MEMORY, DISK, DISK_READ, NET_IN, NET_OUT)


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def _wait_no_sampler(timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while _sampler_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _sampler_threads()


@pytest.fixture
def sampling_threads(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names of the threads the machine was read on, for the whole test."""
    seen: set[str] = set()
    levels = Probe.levels

    def recording(self: Probe) -> dict[str, float]:
        seen.add(threading.current_thread().name)
        return levels(self)

    monkeypatch.setattr(Probe, "levels", recording)
    return seen


@pytest.fixture
def both_stores(
    tmp_path: Path, repo_template: Path, mlflow_db_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``ML_TRACKING_BACKEND=aim,mlflow`` over an empty Aim repository and MLflow database."""
    root = tmp_path / "store"
    shutil.copytree(repo_template, root)
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    monkeypatch.setenv("ML_STORAGE_PATH", str(root))
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim,mlflow")
    return root


@pytest.fixture
def mlflow_store(mlflow_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLflow's SQLite store alone, written from this process (cheap to start)."""
    monkeypatch.setenv("ML_TRACKING_BACKEND", "mlflow")
    monkeypatch.setenv("ML_STORAGE_PATH", str(mlflow_dir))
    monkeypatch.setenv("MLTRACK_WRITER", "thread")
    return mlflow_dir


SDK_READER = """
import json
import aim
import mlflow
from mlflow import MlflowClient

names = {names!r}
run = aim.Repo({aim_repo!r}).get_run({run_id!r})
aim_series = {{}}
for name, ctx, _ in run.iter_metrics_info():
    if name in names:
        steps, (values, _epochs, _times) = run.get_metric(name, ctx).data.numpy()
        aim_series[name] = values.tolist()
mlflow.set_tracking_uri("sqlite:///{mlflow_db}")
client = MlflowClient()
[found] = [r for r in mlflow.search_runs(experiment_names=["system-metrics"], output_format="list")
           if r.data.tags.get("mltrack.run_id") == {run_id!r}]
mlflow_series = {{name: [m.value for m in client.get_metric_history(found.info.run_id, name)] for name in names}}
print(json.dumps({{"aim": aim_series, "mlflow": mlflow_series}}))
"""


def test_a_run_on_aim_and_mlflow_gets_cpu_memory_disk_and_network_series(
    both_stores: Path, sampling_threads: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_SYSTEM_INTERVAL", "0.5")
    with mltrack.start_run("system-metrics") as run:
        started = time.monotonic()
        step = 0
        while time.monotonic() - started < 3.0:  # a training loop that keeps a core busy
            run.log_metric("loss", sum(i * i for i in range(3000)) / 1e10, step=step)
            step += 1
        assert len(_sampler_threads()) == 1
    assert sampling_threads and threading.main_thread().name not in sampling_threads
    assert sampling_threads == {THREAD_NAME}

    for backend in ("aim", "mlflow"):
        with open_repository(backend) as repo:
            history = repo.get_experiment_metrics_sync(run.id)
        for name in CORE:
            series = history.series(name)
            assert len(series.values) >= 3, f"{backend}: {name} has {len(series.values)} points"
            assert list(series.steps) == list(range(len(series.values)))
        assert all(0 <= v <= 100 for v in history.series(CPU).values)
        assert all(0 <= v <= 100 for v in history.series(PROCESS_CPU).values)
        assert max(history.series(PROCESS_CPU).values) > 5  # the loop above was busy
        assert all(v > 10 for v in history.series(RSS).values)  # a Python process with mltrack: tens of MB
        assert all(0 < v <= 100 for v in history.series(MEMORY).values)
        assert all(v >= 0 for v in history.series(NET_IN).values)
        assert not [p for p in history if p.name.startswith("system/gpu_")]  # no GPU on this machine

    got = run_python(
        SDK_READER.format(
            names=list(CORE),
            aim_repo=str(both_stores),
            run_id=run.id,
            mlflow_db=str(both_stores / "mlflow.db"),
        )
    )
    for store in ("aim", "mlflow"):
        assert set(got[store]) == set(CORE), store
        assert all(len(values) >= 3 for values in got[store].values()), store
        assert all(v > 10 for v in got[store][RSS]), store
    assert got["aim"] == got["mlflow"]  # one sample, the same values in both stores


def test_off_records_no_system_metric_and_starts_no_thread(
    mlflow_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_SYSTEM_METRICS", "0")
    monkeypatch.setenv("MLTRACK_SYSTEM_INTERVAL", "0.1")
    with mltrack.start_run("off") as run:
        for step in range(8):
            run.log_metric("loss", 1.0, step=step)
            time.sleep(0.1)
        assert not _sampler_threads()
    names = {p.name for p in experiment_repository().get_experiment_metrics_sync(run.id)}
    assert names == {"loss"}
    assert health_sync().details["backends"]["system"]["enabled"] is False


def test_one_thread_samples_every_run_and_ends_when_the_last_finishes(
    mlflow_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_SYSTEM_INTERVAL", "0.2")
    first = mltrack.start_run("two-runs")
    second = mltrack.start_run("two-runs")
    # The sampler starts when the store has the run (the flusher hands creations on; the first
    # one opens the store, which takes seconds on a loaded machine).
    deadline = time.monotonic() + 15
    while not _sampler_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.9)
    assert len(_sampler_threads()) == 1
    first.finish()
    repo = experiment_repository()
    first_count = len(repo.get_experiment_metrics_sync(first.id).series(CPU).values)
    assert first_count >= 3
    deadline = time.monotonic() + 5
    while len(repo.get_experiment_metrics_sync(second.id).series(CPU).values) <= first_count + 1:
        assert time.monotonic() < deadline, "the second run stopped being sampled with the first"
        assert len(_sampler_threads()) == 1
        time.sleep(0.1)
    second.finish()
    assert _wait_no_sampler(), "the sampler thread outlived the last run"

    counts = {r.id: len(repo.get_experiment_metrics_sync(r.id).series(CPU).values) for r in (first, second)}
    assert counts[first.id] == first_count
    time.sleep(0.6)  # three more intervals: nothing lands in finished runs
    assert {
        r.id: len(repo.get_experiment_metrics_sync(r.id).series(CPU).values) for r in (first, second)
    } == counts

    third = mltrack.start_run("two-runs")  # a new run starts a new thread
    time.sleep(0.5)
    third.finish()
    assert len(repo.get_experiment_metrics_sync(third.id).series(CPU).values) >= 1
    assert _wait_no_sampler()


def test_no_gpu_is_skipped_cleanly_and_health_says_why(
    mlflow_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_SYSTEM_INTERVAL", "0.2")
    with mltrack.start_run("gpu") as run:
        time.sleep(0.7)
    health = health_sync()
    system = health.details["backends"]["system"]
    assert health.is_healthy
    assert system["gpus"] == 0 and system["gpu_note"]  # nvidia-ml-py missing, or no GPU answered
    assert system["errors"] == 0 and system["samples"] >= 2
    names = {p.name for p in experiment_repository().get_experiment_metrics_sync(run.id)}
    assert CPU in names and not any(n.startswith("system/gpu_") for n in names)


def test_a_bad_interval_turns_sampling_off_and_health_names_the_fix(
    mlflow_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRACK_SYSTEM_INTERVAL", "0")
    with mltrack.start_run("bad") as run:
        run.log_metric("loss", 1.0, step=0)
    assert {p.name for p in experiment_repository().get_experiment_metrics_sync(run.id)} == {"loss"}
    health = health_sync()
    assert not health.is_healthy
    assert any("MLTRACK_SYSTEM_INTERVAL=0" in issue and "above 0" in issue for issue in health.issues)
