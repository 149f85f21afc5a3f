"""Only the writer process is SIGKILLed while a trainer logs to W&B: its replacement carries on, nothing is lost.

mltrack replaces a writer process that dies and sends it again what was not stored; the W&B
backend of the new writer takes the run over (a torn last record cut off, itself recorded as
the run's writer), so the run ends COMPLETED with every point, once, and W&B reads it too.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from _wandb_native import leet_history, leet_summary

from _child import popen_python, run_python, wait_for_writer

TRAINER = """
import json, os, time, mltrack, mltrack.factory
run = mltrack.start_run("writer-death")
print("run", run.id, flush=True)
step = 0
while not os.path.exists({stop!r}):
    run.log_metric("loss", float(step), step=step)
    step += 1
    if step % 100 == 0:
        time.sleep(0.001)
run.finish()
print("done", step, json.dumps(mltrack.factory.health_sync().details["writer"]), flush=True)
"""


@pytest.mark.slow  # ~19 s: three writer processes start, each importing wandb
def test_writer_killed_twice_while_logging_to_wandb_loses_nothing(wandb_root: Path) -> None:
    stop = wandb_root.parent / "stop"
    env = {"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(wandb_root), "MLTRACK_WRITER": "process"}
    trainer = popen_python(TRAINER.format(stop=str(stop)), env=env)
    try:
        assert trainer.stdout is not None
        run_id = trainer.stdout.readline().split()[1]
        killed: int | None = None
        for pause in (1.0, 1.5):
            pid = wait_for_writer(trainer.pid, killed)
            time.sleep(pause)  # the writer has stored points, some of a batch maybe half-way
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(1.0)
        stop.touch()
        out, err = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert trainer.returncode == 0, err[-3000:]
    _, logged, writer = next(line for line in out.splitlines() if line.startswith("done")).split(" ", 2)
    assert json.loads(writer)["writer_restarts"] == 2

    got = run_python(
        f"""
        import json, mltrack
        repo = mltrack.open_repository("wandb", storage_path={str(wandb_root)!r}, must_exist=True)
        run = repo.get_experiment_sync({run_id!r})
        steps = [int(s) for s in repo.get_experiment_metrics_sync({run_id!r}).series("loss").steps]
        print(json.dumps(dict(status=run.status.value, tags=list(run.tags), steps=steps)))
        """
    )
    assert got["steps"] == list(range(int(logged)))  # every returned point, once, in order
    assert got["status"] == "completed"
    assert not [t for t in got["tags"] if t.startswith("mltrack:undelivered")]
    (folder,) = (wandb_root / "wandb").glob(f"offline-run-*-{run_id}")
    assert leet_summary(folder)["state"] == "finished"
    assert {step for step, _, _ in leet_history(folder)["loss"]} == set(range(int(logged)))
