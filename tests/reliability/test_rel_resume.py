"""Resume after a crash: a trainer SIGKILLed mid-run, then a new process resumes the run and logs on.

On a real Aim repository and a real MLflow SQLite store (each through mltrack's writer
process, the default for both), a trainer logs ``loss`` with automatic steps and is killed
with SIGKILL. A second process waits for the run to read CRASHED, resumes it by an id prefix
with ``mltrack.start_run(resume=...)`` and logs on with automatic steps. A fresh reader then
finds one run: COMPLETED, resumed once, its config merged, and one history whose steps are
0, 1, 2, ... with no gap and no duplicate, the resumed points right after the last point the
killed trainer stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _child import kill_while_logging
from _reliability import popen_python, record, run_python

RESUMED_POINTS = 300
OFFSET = 1e9
"""The resumed process logs ``OFFSET + k``: its points are told from the killed trainer's by value."""


def _setup(store: str, path: Path) -> str:
    if store == "aim":
        return f"mltrack.configure_backend('aim', repo_path={str(path)!r}, experiment_name='resume')"
    return f"mltrack.configure_backend('mlflow', storage_path={str(path)!r}, experiment_name='resume')"


def _trainer(store: str, path: Path) -> str:
    return f"""
import time, mltrack
{_setup(store, path)}
run = mltrack.start_run(config={{"lr": 0.001, "phase": 1}})
print("run", run.id, flush=True)
step = 0
while True:
    run.log_metric("loss", float(step))  # automatic step: 0, 1, 2, ...
    print(step, time.time(), flush=True)
    step += 1
    if step % 10 == 0:
        time.sleep(0.005)
"""


def _resumer(store: str, path: Path, run_id: str, wait: bool = True) -> str:
    waiting = f"""
from mltrack.errors import RunNotFoundError
def status():
    try:
        return repo.get_experiment_sync({run_id!r}).status.value
    except RunNotFoundError:  # the writer process is still creating it (MLflow's first migrations)
        return "running"
started = time.monotonic()
while status() == "running":  # the killed run's writer finishing
    assert time.monotonic() - started < 60, "the killed run still reads RUNNING after 60 s"
    time.sleep(0.2)
before = repo.get_experiment_sync({run_id!r})"""
    return f"""
import json, time, mltrack
{_setup(store, path)}
repo = mltrack.factory.experiment_repository()
{waiting if wait else "before = None"}
with mltrack.start_run(resume={run_id[:10]!r}, config={{"phase": 2}}) as run:
    assert run.id == {run_id!r}
    for k in range({RESUMED_POINTS}):
        run.log_metric("loss", {OFFSET} + k)
# Read back as any reader does, once the resumed run is finished and stored.
run = repo.get_experiment_sync({run_id!r})
loss = repo.get_experiment_metrics_sync({run_id!r}).series("loss")
runs = [r.experiment_id for r in repo.list_experiments_sync()]
print(json.dumps(dict(status=run.status.value, resumed=run.resumed, config=run.config, runs=runs,
                      steps=[int(s) for s in loss.steps], values=[float(v) for v in loss.values],
                      final=run.final_metrics.get("loss"),
                      status_before=before and before.status.value, resumed_before=before and before.resumed)))
"""


@pytest.mark.parametrize("store", ["aim", "mlflow"])
def test_run_killed_by_sigkill_resumes_with_no_gap_or_duplicate(store: str, tmp_path: Path) -> None:
    path = tmp_path / store
    env = {"MLTRACK_SPOOL_DIR": str(tmp_path / "spool")}  # this test's own spools only
    child = popen_python(_trainer(store, path), env=env)
    run_id, logged, _killed_at = kill_while_logging(child, seconds=1.0, min_lines=300)

    got = resumed = run_python(_resumer(store, path, run_id), timeout=180, env=env)
    steps, values = got["steps"], got["values"]
    assert isinstance(steps, list) and isinstance(values, list)
    first = [v for v in values if v < OFFSET]
    numbers = record(
        f"resume-{store}",
        points_returned=len(logged),
        points_stored_before_kill=len(first),
        points_resumed=len(values) - len(first),
        status_after_kill=resumed["status_before"],
    )
    assert resumed["status_before"] == "crashed", numbers
    assert resumed["resumed_before"] == 0
    assert got["runs"] == [run_id], "one run, not a new one"
    assert got["status"] == "completed" and got["resumed"] == 1, got
    assert got["config"] == {"lr": 0.001, "phase": 2}
    # One history: steps 0..n-1, each once; the killed trainer's prefix, then the resumed points.
    assert steps == list(range(len(steps))), "a gap or a duplicate step"
    assert len(first) >= 100, numbers  # most of what the trainer logged before the kill is there
    assert values[: len(first)] == [float(s) for s in range(len(first))]
    assert values[len(first) :] == [OFFSET + k for k in range(RESUMED_POINTS)]
    assert got["final"] == OFFSET + RESUMED_POINTS - 1
    print(json.dumps(numbers))


@pytest.mark.slow
def test_run_whose_trainer_and_writer_were_killed_together_resumes_after_its_spool(tmp_path: Path) -> None:
    """A group kill (trainer and writer process at once) leaves the last points in the spool:
    resuming delivers them first, so the resumed steps go on after them (no overwrite, no gap)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from _child import wait_for_writer
    from _reliability import child_env

    store, spool = tmp_path / "mlflow", tmp_path / "spool"
    env = child_env({"MLTRACK_WRITER": "process", "MLTRACK_SPOOL_DIR": str(spool)})
    trainer = subprocess.Popen(
        [sys.executable, "-u", "-c", _trainer("mlflow", store).replace("time.sleep(0.005)", "pass")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert trainer.stdout is not None and trainer.stderr is not None
    first = trainer.stdout.readline().split()
    assert first[:1] == ["run"], [*first, trainer.stderr.read()]
    run_id = first[1]
    writer = wait_for_writer(trainer.pid)
    returned = 0
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        assert trainer.stdout.readline(), trainer.stderr.read()
        returned += 1
    os.killpg(trainer.pid, signal.SIGSTOP)
    os.kill(writer, signal.SIGSTOP)
    os.killpg(trainer.pid, signal.SIGKILL)
    os.kill(writer, signal.SIGKILL)
    trainer.wait(10)
    assert list(spool.glob("*.spool")), "the killed trainer left no spool"

    # No waiting for CRASHED: the run may exist in the spool only (the writer process had not
    # created it yet); resume delivers the spool first.
    got = run_python(_resumer("mlflow", store, run_id, wait=False), timeout=600, env=env)
    steps, values = got["steps"], got["values"]
    first_part = [v for v in values if v < OFFSET]
    numbers = record("resume-after-group-kill", points_returned=returned, points_before=len(first_part))
    assert got["status"] == "completed" and got["resumed"] == 1, got
    assert steps == list(range(len(steps))), "a gap or a duplicate step"
    assert values[: len(first_part)] == [float(s) for s in range(len(first_part))], numbers
    assert values[len(first_part) :] == [OFFSET + k for k in range(RESUMED_POINTS)], numbers
    assert len(first_part) >= returned - 2_000, numbers  # the spool kept all but the last flush interval
