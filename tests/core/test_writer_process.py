"""The writer process: the store's work leaves the trainer, and survives the trainer's death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _child import env_without
from _plugin_dists import run_py

LOSS_WINDOW_S = 0.1  # the flush interval: points returned earlier than this before a kill are kept


def _records(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_process_writer_stores_everything_and_the_trainer_never_loads_the_store(
    plugin_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    proc = run_py(
        plugin_path,
        """
        import os, sys, mltrack
        with mltrack.start_run("proc") as run:
            for step in range(5000):
                run.log_metric("m", float(step), step=step)
        from mltrack.factory import tracking_session
        sink = tracking_session().writer._sink
        print(type(sink).__name__, type(sink._stores).__name__, "json" in sys.modules)
        """,
        ML_TRACKING_BACKEND="filelog",
        ML_STORAGE_PATH=str(log),
        MLTRACK_WRITER="process",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["ObservedSink", "ProcessSink"]  # observers here, stores there
    records = _records(log)
    steps = [s for r in records if r["hook"] == "log_metrics" for s in r["steps"]]
    assert steps == list(range(5000))
    assert records[-1] == {"hook": "finish_run", "run_id": records[0]["run_id"], "status": "completed"}


def test_sigkilled_trainer_loses_nothing_older_than_the_flush_interval_and_reads_crashed(
    plugin_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    trainer = textwrap.dedent(
        """
        import sys, time, mltrack
        run = mltrack.start_run("doomed")
        step = 0
        while True:
            run.log_metric("m", float(step), step=step)
            if step % 50 == 0:
                print(step, time.time(), flush=True)  # this step's log call has returned
            step += 1
            time.sleep(0.0002)
        """
    )
    env = env_without(("ML_", "MLTRACK_"))
    env.update(
        PYTHONPATH=str(plugin_path),
        MLTRACK_LOAD_PLUGINS="filelog",
        ML_TRACKING_BACKEND="filelog",
        ML_STORAGE_PATH=str(log),
        MLTRACK_WRITER="process",
    )
    proc = subprocess.Popen([sys.executable, "-c", trainer], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    returned: list[tuple[int, float]] = []
    step, t = proc.stdout.readline().split()  # started (a loaded machine takes seconds to get here)
    returned.append((int(step), float(t)))
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        step, t = proc.stdout.readline().split()
        returned.append((int(step), float(t)))
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    proc.wait()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r["hook"] == "finish_run" for r in _records(log)):
        time.sleep(0.1)
    records = _records(log)
    assert records[-1]["hook"] == "finish_run"
    assert records[-1]["status"] == "crashed"
    stored = {s for r in records if r["hook"] == "log_metrics" for s in r["steps"]}
    must_have = max(step for step, t in returned if t < killed_at - LOSS_WINDOW_S)
    missing = [s for s in range(must_have + 1) if s not in stored]
    assert missing == []


def test_sigterm_stores_everything_and_finishes_the_run_interrupted(
    plugin_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    trainer = textwrap.dedent(
        """
        import mltrack
        with mltrack.start_run("terminated") as run:
            step = 0
            while True:
                run.log_metric("m", float(step), step=step)
                if step == 1000:
                    print("ready", flush=True)
                step += 1
        """
    )
    env = env_without(("ML_", "MLTRACK_"))
    env.update(
        PYTHONPATH=str(plugin_path),
        MLTRACK_LOAD_PLUGINS="filelog",
        ML_TRACKING_BACKEND="filelog",
        ML_STORAGE_PATH=str(log),
        MLTRACK_WRITER="process",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", trainer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert "Terminated: terminated by signal 15" in stderr
    records = _records(log)
    assert records[-1]["hook"] == "finish_run"
    assert records[-1]["status"] == "interrupted"
    steps = [s for r in records if r["hook"] == "log_metrics" for s in r["steps"]]
    assert steps == list(range(len(steps)))
    assert len(steps) > 1000


def test_a_store_that_kills_every_writer_is_given_up_counted_and_never_hangs_the_trainer(
    plugin_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    proc = run_py(
        plugin_path,
        """
        import json, mltrack, mltrack.factory
        with mltrack.start_run("poisoned") as run:
            for step in range(100):
                run.log_metric("m", float(step), step=step)
            mltrack.factory.tracking_session().flush()
            run.log_metric("m", -13.0013, step=100)  # the store's process dies on this point
        writer = mltrack.factory.health_sync().details["writer"]
        print(json.dumps(writer))
        """,
        ML_TRACKING_BACKEND="filelog",
        ML_STORAGE_PATH=str(log),
        MLTRACK_WRITER="process",
    )
    assert proc.returncode == 0, proc.stderr
    writer = json.loads(proc.stdout.splitlines()[-1])
    assert writer["writer_restarts"] == 11  # sent again to 11 writers; each died before storing it
    assert writer["points_undelivered"] >= 1 and writer["write_errors"] >= 1
    assert "times in a row before storing anything" in proc.stderr
    steps = [s for r in _records(log) if r["hook"] == "log_metrics" for s in r["steps"]]
    assert steps == list(range(100))  # what was stored before stays stored
