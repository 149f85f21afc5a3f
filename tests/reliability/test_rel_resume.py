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
OFFSET = 100_000.0
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


def _resumer(store: str, path: Path, run_id: str) -> str:
    return f"""
import json, time, mltrack
from mltrack.errors import RunStateError
{_setup(store, path)}
repo = mltrack.factory.experiment_repository()
started = time.monotonic()
while repo.get_experiment_sync({run_id!r}).status.value == "running":  # the killed run's writer finishing
    assert time.monotonic() - started < 60, "the killed run still reads RUNNING after 60 s"
    time.sleep(0.2)
before = repo.get_experiment_sync({run_id!r})
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
                      status_before=before.status.value, resumed_before=before.resumed)))
"""


@pytest.mark.parametrize("store", ["aim", "mlflow"])
def test_run_killed_by_sigkill_resumes_with_no_gap_or_duplicate(store: str, tmp_path: Path) -> None:
    path = tmp_path / store
    child = popen_python(_trainer(store, path))
    run_id, logged, _killed_at = kill_while_logging(child, seconds=1.0, min_lines=300)

    got = resumed = run_python(_resumer(store, path, run_id), timeout=180)
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
