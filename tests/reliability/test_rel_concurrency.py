"""Case 3, concurrency: 8 processes x 4 threads log at once into one repository or one aim server.

Each thread has its own run and logs ``points`` values; meanwhile a reader process polls the
store every 0.5 s and records each run's history length. Nothing may be lost, no writer may
see a lock error, and no history may ever shrink between two polls. Complements
tests/aim/test_concurrency.py (4 processes x 1 thread x 50k points, no reader).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack_aim import configure_aim_backend
from mltrack_aim.processes import start_aim_server

from _reliability import popen_python, record, repetitions

PROCESSES = 8
THREADS = 4
CI_POINTS = repetitions("MLTRACK_RELIABILITY_POINTS", 500)
FULL_POINTS = 10_000
CI_SERVER_POINTS = repetitions("MLTRACK_RELIABILITY_SERVER_POINTS", 100)
FULL_SERVER_POINTS = 2_000


def _writer(repo: str, points: int, index: int) -> str:
    return f"""
        import json, threading, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={repo!r}, experiment_name="concurrent")
        ids, errors = [], []
        def train(thread):
            try:
                with mltrack.start_run(config={{"process": {index}, "thread": thread}}) as run:
                    ids.append(run.id)
                    for step in range({points}):
                        run.log_metric("value", step * 100 + {index} * 10 + thread, step=step)
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=train, args=(t,)) for t in range({THREADS})]
        [t.start() for t in threads]
        [t.join() for t in threads]
        stats = mltrack.factory.tracking_session().stats
        print(json.dumps(dict(ids=ids, errors=errors, undelivered=stats.points_undelivered,
                              write_errors=stats.write_errors, last_error=stats.last_error)))
    """


def _reader(repo: str, stop: Path) -> str:
    return f"""
        import json, os, time, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={repo!r})
        repo = mltrack.factory.experiment_repository()
        while not os.path.exists({str(stop)!r}):
            seen, errors = {{}}, []
            try:
                for run in repo.list_experiments_sync(name="concurrent"):
                    history = repo.get_experiment_metrics_sync(run.experiment_id)
                    seen[run.experiment_id] = len(history.series("value")) if "value" in history else 0
            except Exception as exc:
                errors.append(f"{{type(exc).__name__}}: {{exc}}")
            print(json.dumps(dict(seen=seen, errors=errors)), flush=True)
            time.sleep(0.5)
    """


def _write_concurrently(repo: str, points: int, tmp_path: Path) -> dict[str, Any]:
    stop = tmp_path / "stop-reader"
    reader = popen_python(_reader(repo, stop))
    started = time.monotonic()
    children = [popen_python(_writer(repo, points, i)) for i in range(PROCESSES)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=3600)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    took = time.monotonic() - started
    stop.touch()
    polls_out, reader_err = reader.communicate(timeout=300)
    polls = [json.loads(line) for line in polls_out.splitlines() if line.startswith("{")]

    configure_aim_backend(repo_path=repo)
    api = mltrack.factory.experiment_repository()
    runs = {r.experiment_id: r for r in api.list_experiments_sync(name="concurrent")}
    expected_ids = {i for r in results for i in r["ids"]}
    read = 0
    wrong = 0
    for run_id in expected_ids:
        run = runs[run_id]
        series = api.get_experiment_metrics_sync(run_id).series("value")
        read += len(series)
        p, t = run.config["process"], run.config["thread"]
        expected = [float(s * 100 + p * 10 + t) for s in range(points)]
        wrong += sum(1 for a, b in zip(series.values, expected) if float(a) != b)
        assert run.status is mltrack.ExperimentStatus.COMPLETED
    shrunk = 0
    last: dict[str, int] = {}
    for poll in polls:
        for run_id, n in poll["seen"].items():
            shrunk += n < last.get(run_id, 0)
            last[run_id] = max(n, last.get(run_id, 0))
    numbers = record(
        "concurrency",
        repo="server" if repo.startswith("aim://") else "local",
        processes=PROCESSES,
        threads=THREADS,
        points_logged=PROCESSES * THREADS * points,
        points_read=read,
        points_lost=PROCESSES * THREADS * points - read,
        wrong_values=wrong,
        writer_errors=sum(len(r["errors"]) + r["write_errors"] for r in results),
        undelivered=sum(r["undelivered"] for r in results),
        reader_polls=len(polls),
        reader_errors=sum(len(p["errors"]) for p in polls),
        histories_shrunk=shrunk,
        took_s=round(took, 1),
    )
    assert len(expected_ids) == PROCESSES * THREADS, results
    assert numbers["points_lost"] == 0 and numbers["wrong_values"] == 0, numbers
    assert numbers["writer_errors"] == 0 and numbers["undelivered"] == 0, [r["last_error"] for r in results]
    assert numbers["reader_errors"] == 0, [p["errors"] for p in polls if p["errors"]][:3]
    assert numbers["histories_shrunk"] == 0, numbers
    assert numbers["reader_polls"] >= 1, reader_err[-2000:]
    return numbers


def test_8_processes_x_4_threads_into_one_local_repository(aim_repo: Path, tmp_path: Path) -> None:
    """32 writers at once into one local repository while a reader polls: nothing lost, no lock error."""
    _write_concurrently(str(aim_repo), CI_POINTS, tmp_path)


def test_8_processes_x_4_threads_into_one_aim_server(tmp_path: Path) -> None:
    """32 writers at once into one aim server while a reader polls it: nothing lost, no lock error."""
    with start_aim_server(tmp_path / "server-repo") as server:
        _write_concurrently(server.address, CI_SERVER_POINTS, tmp_path)


@pytest.mark.slow
def test_8_processes_x_4_threads_10k_points_each_locally(aim_repo: Path, tmp_path: Path) -> None:
    """The local case with 10,000 points a thread (320,000 points)."""
    _write_concurrently(str(aim_repo), FULL_POINTS, tmp_path)


@pytest.mark.slow
def test_8_processes_x_4_threads_2k_points_each_into_a_server(tmp_path: Path) -> None:
    """The server case with 2,000 points a thread (64,000 points)."""
    with start_aim_server(tmp_path / "server-repo") as server:
        _write_concurrently(server.address, FULL_SERVER_POINTS, tmp_path)
