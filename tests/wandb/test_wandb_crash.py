"""A training process killed by SIGKILL while logging to W&B: its run reads CRASHED and keeps its points.

Two ways a run's writer dies: the trainer alone (mltrack's writer process outlives it, stores
what it received and finishes the run with exit code 137), or the process holding the backend
itself (``MLTRACK_WRITER=thread``): then the log has no exit record, and a reader finds the
writer's pid gone from this host. Either way W&B's own reader still opens the run folder and
reads every point stored before the kill.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _wandb_native import leet_history, leet_summary, sync_dry_run

from _child import assert_kept_before_window, kill_while_logging, logging_trainer, popen_python, run_python

LOSS_WINDOW = 1.0
"""Seconds before the kill within which logged points may be lost (flush interval + one batch write)."""


def _child() -> str:
    setup = 'run = mltrack.start_run("crash", {"learning_rate": 0.001})'
    return logging_trainer(setup, value="float(step)", pause_every=50, pause=0.01)


@pytest.mark.parametrize("writer", ["process", pytest.param("thread", marks=pytest.mark.slow)])
def test_sigkilled_trainer_reads_crashed_and_wandb_still_reads_its_points(
    wandb_root: Path, writer: str
) -> None:
    env = {"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(wandb_root), "MLTRACK_WRITER": writer}
    child = popen_python(_child(), env=env)
    run_id, logged, killed_at = kill_while_logging(child, seconds=3.0, min_lines=500)

    got = run_python(
        f"""
        import json, time
        from mltrack.factory import experiment_repository
        repo = experiment_repository()
        deadline = time.monotonic() + 60
        while True:  # the writer process stores what it received, then finishes the run
            run = repo.get_experiment_sync({run_id!r})
            if run.status.value != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        steps = [int(s) for s in repo.get_experiment_metrics_sync({run_id!r}).series("loss").steps]
        print(json.dumps(dict(status=run.status.value, end=run.end_time is not None, steps=steps,
                              config=run.config)))
        """,
        env=env,
    )
    assert got["status"] == "crashed"
    assert got["end"]
    assert got["config"] == {"learning_rate": 0.001}
    assert_kept_before_window(logged, killed_at, LOSS_WINDOW, got["steps"])

    # W&B's own reader opens the folder and reads the same points.
    (folder,) = (wandb_root / "wandb").glob(f"offline-run-*-{run_id}")
    native = leet_summary(folder)
    assert native["run_id"] == run_id and native["config"] == {"learning_rate": 0.001}
    native_steps = sorted({step for step, _, _ in leet_history(folder)["loss"]})
    assert native_steps == got["steps"]
    assert f"run-{run_id}.wandb" in sync_dry_run(wandb_root)  # `wandb sync` would upload it
    if writer == "process":  # finished by mltrack's writer process: exit code 137, as after SIGKILL
        assert native["exit_code"] == 137 and native["state"] != "finished", (native, _stderr(child))


def _stderr(child: subprocess.Popen[str]) -> str:
    """What the trainer and its writer process wrote to stderr (the writer's log), once both ended."""
    assert child.stderr is not None
    return child.stderr.read()[-5000:]
