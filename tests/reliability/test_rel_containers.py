"""A trainer in its own PID namespace (a container sharing the host's network) is judged rightly from the host.

Before, the host judged the run by the writer's pid inside the container: a killed run read
RUNNING for minutes (its writer's pid 2 is ``kthreadd`` on the host) and a live run could read
CRASHED while logging. The writer now records its PID namespace, and a reader on the host finds
the writer by its namespace and its pid there (:class:`mltrack.authoring.WriterRecord`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from _reliability import child_env, record, run_python

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs unshare(1) and root to start a trainer in its own PID namespace",
)

TRAINER = """
import os, time, mltrack
run = mltrack.start_run("contained")
print(run.id, os.getpid(), flush=True)
step = 0
while not os.path.exists({stop!r}):
    run.log_metric("loss", float(step), step=step)
    step += 1
    time.sleep(0.001)
run.finish()
"""

STATUS = """
import json, mltrack
repo = mltrack.open_repository({backend!r}, storage_path={path!r}, must_exist=True)
print(json.dumps(repo.get_experiment_sync({run_id!r}).status.value))
"""


def _readable(backend: str, store: str, run_id: str) -> bool:
    """Whether the store holds the run yet (its writer has created both)."""
    try:
        _status(backend, store, run_id)
    except AssertionError:
        return False
    return True


def _status(backend: str, store: str, run_id: str) -> str:
    return str(run_python(STATUS.format(backend=backend, path=store, run_id=run_id)))


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_contained_trainer_reads_running_while_alive_and_crashed_once_killed(
    backend: str, tmp_path: Path
) -> None:
    store = str(tmp_path / backend)
    env = child_env({"ML_TRACKING_BACKEND": backend, "ML_STORAGE_PATH": store, "MLTRACK_WRITER": "process"})
    code = TRAINER.format(stop=str(tmp_path / "stop"))
    container = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert container.stdout is not None
        run_id, inner_pid = container.stdout.readline().split()
        assert inner_pid == "1"  # the trainer is the container's first process
        time.sleep(1.5)  # its writer process is up and writing
        up_by = time.monotonic() + 60  # a loaded machine takes seconds to make a new store
        while not _readable(backend, store, run_id) and time.monotonic() < up_by:
            time.sleep(0.5)
        assert _status(backend, store, run_id) == "running"  # judged alive from the host
        # Kill the container: its first process dies, the kernel ends every other one with it.
        trainer = psutil.Process(container.pid).children()[0]
        os.kill(trainer.pid, signal.SIGKILL)
        container.wait(30)
        killed = time.monotonic()
        # Each read is a fresh process (seconds of imports on a loaded machine): what counts is
        # how soon after the kill a read began that saw the run CRASHED, not how long it took.
        asked = killed
        status = _status(backend, store, run_id)
        while status == "running" and time.monotonic() - killed < 30:
            time.sleep(0.5)
            asked = time.monotonic()
            status = _status(backend, store, run_id)
        took = asked - killed
    finally:
        if container.poll() is None:
            container.kill()
    record(f"PID-namespace trainer killed ({backend})", status=status, seconds_to_crashed=round(took, 1))
    assert status == "crashed"
    assert took < 10
