"""Forked children: a loud error instead of lost points, the parent's writer untouched, their own runs stored.

Before, a multiprocessing fork worker logging into its parent's run lost 2,000 of 2,000 points
with health saying healthy; an ``os.fork`` child exiting normally closed the parent's writer
(the parent then lost 170-186 of its 4,000 points); a run opened in a child was never created.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _reliability import child_env, record, run_python

PARENT_AND_CHILD = """
import json, os, sys, mltrack
from mltrack.errors import RunStateError
run = mltrack.start_run("parent")
for step in range(2000):
    run.log_metric("loss", float(step), step=step)
pid = os.fork()
if pid == 0:  # the child: logging into the parent's run is refused, loudly
    try:
        run.log_metric("loss", -1.0, step=99999)
        code = 3
    except RunStateError as exc:
        code = 0 if "forked from process" in str(exc) else 4
    own = mltrack.start_run("child")  # a run of its own is created and stored
    for step in range(500):
        own.log_metric("loss", float(step), step=step)
    own.finish()
    with open({child_file!r}, "w") as fh:
        fh.write(own.id)
    sys.exit(code)  # a normal exit: atexit handlers run in the child
_, status = os.waitpid(pid, 0)
for step in range(2000, 4000):
    run.log_metric("loss", float(step), step=step)
run.finish()
child_run = open({child_file!r}).read()
print(json.dumps({{"parent_run": run.id, "child_run": child_run, "child_exit": os.waitstatus_to_exitcode(status)}}))
"""

POOL = """
import json, multiprocessing as mp, mltrack

def work(i):
    with mltrack.start_run("worker", name=f"worker-{{i}}") as run:
        for step in range(2000):
            run.log_metric("loss", float(step), step=step)
    return run.id

def unfinished(queue):
    run = mltrack.start_run("worker", name="unfinished")
    for step in range(2000):
        run.log_metric("loss", float(step), step=step)
    queue.put(run.id)  # the process ends without finishing the run: its end does

def parent_run_in_worker():
    try:
        PARENT.log_metric("loss", 1.0, step=1)  # inherited through the fork
    except Exception as exc:
        return type(exc).__name__
    return "logged"

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    parent = PARENT = mltrack.start_run("pool-parent")
    parent.log_metric("loss", 0.0, step=0)
    with ctx.Pool(2) as pool:
        ids = pool.map(work, range(3))
    with ctx.Pool(1) as pool:
        refused = pool.apply(parent_run_in_worker)
    queue = ctx.Queue()
    proc = ctx.Process(target=unfinished, args=(queue,))
    proc.start()
    ids.append(queue.get(timeout=120))
    proc.join(120)
    parent.finish()
    print(json.dumps({{"workers": ids, "refused": refused, "parent": parent.id}}), flush=True)
"""

READ = """
import json, mltrack
repo = mltrack.open_repository({backend!r}, storage_path={path!r}, must_exist=True)
out = {{}}
for run_id in {ids!r}:
    run = repo.get_experiment_sync(run_id)
    steps = [int(s) for s in repo.get_experiment_metrics_sync(run_id).series("loss").steps]
    out[run_id] = dict(status=run.status.value, steps=steps)
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_os_fork_child_is_refused_the_parents_run_and_its_own_run_is_stored(
    backend: str, tmp_path: Path
) -> None:
    store = str(tmp_path / backend)
    env = child_env({"ML_TRACKING_BACKEND": backend, "ML_STORAGE_PATH": store})
    parent = run_python(PARENT_AND_CHILD.format(child_file=str(tmp_path / "child-run")), env=env)
    child_run = parent["child_run"]
    assert parent["child_exit"] == 0  # the child got RunStateError naming the fork
    read = run_python(
        READ.format(backend=backend, path=store, ids=[parent["parent_run"], child_run]), env=env
    )
    parent_read, child_read = read[parent["parent_run"]], read[child_run]
    record(
        f"os.fork child ({backend})",
        parent_points=len(parent_read["steps"]),
        child_points=len(child_read["steps"]),
    )
    assert parent_read == {"status": "completed", "steps": list(range(4000))}  # the parent lost nothing
    assert child_read == {"status": "completed", "steps": list(range(500))}


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_multiprocessing_fork_workers_store_their_own_runs(backend: str, tmp_path: Path) -> None:
    store = str(tmp_path / backend)
    env = child_env({"ML_TRACKING_BACKEND": backend, "ML_STORAGE_PATH": store})
    out = run_python(POOL.format(), env=env)
    assert out["refused"] == "RunStateError"
    read = run_python(READ.format(backend=backend, path=store, ids=[*out["workers"], out["parent"]]), env=env)
    record(
        f"multiprocessing fork workers ({backend})", stored=[len(read[w]["steps"]) for w in out["workers"]]
    )
    for worker in out["workers"]:
        assert read[worker] == {"status": "completed", "steps": list(range(2000))}
    assert read[out["parent"]] == {"status": "completed", "steps": [0]}


SPAWNED = """
import json, multiprocessing as mp, sys, mltrack

def finished(queue):
    with mltrack.start_run("spawned", name="finished") as run:
        for step in range(300):
            run.log_metric("loss", float(step), step=step)
    queue.put(run.id)

def unfinished(queue):
    run = mltrack.start_run("spawned", name="unfinished")
    for step in range(300):
        run.log_metric("loss", float(step), step=step)
    queue.put(run.id)  # the worker's end finishes it

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(queue,)) for target in (finished, unfinished)]
    for proc in procs:
        proc.start()
    ids = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(120)
    print(json.dumps({"ids": ids, "exits": [proc.exitcode for proc in procs]}), flush=True)
"""


def test_spawned_workers_end_cleanly_with_their_runs_stored(tmp_path: Path) -> None:
    """Spawned workers (the sweep example's, Optuna users'): the run each leaves open is finished
    once, at the worker's end; no error is printed (before: 'ValueError: write to closed file'
    from closing the writer a second time, at atexit after multiprocessing's finalizer)."""
    store = str(tmp_path / "mlflow")
    env = child_env({"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": store})
    script = tmp_path / "spawned.py"  # spawn imports the main module: it must be a file
    script.write_text(SPAWNED)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["exits"] == [0, 0]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    read = run_python(READ.format(backend="mlflow", path=store, ids=out["ids"]), env=env)
    for run_id in out["ids"]:
        assert read[run_id] == {"status": "completed", "steps": list(range(300))}
