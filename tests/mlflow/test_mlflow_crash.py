"""A training process killed by SIGKILL: its run reads CRASHED, in mltrack and in MLflow.

Two ways a run's writer dies: the trainer alone (mltrack's writer process outlives it, stores
what it received and marks the run CRASHED), or the process holding the backend itself (the
in-process writer, ``MLTRACK_WRITER=thread``): then the next reader finds the writer's pid
gone from this host and marks the run CRASHED.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _child import assert_kept_before_window, kill_while_logging, logging_trainer, popen_python, run_python

LOSS_WINDOW = 1.0
"""Seconds before the kill within which logged points may be lost (flush interval + one batch write)."""


def _child() -> str:
    setup = 'run = mltrack.start_run("crash", {"learning_rate": 0.001})'
    return logging_trainer(setup, value="float(step)", pause_every=50, pause=0.01)


@pytest.mark.parametrize(
    "writer",
    [
        "process",
        # The dead in-process writer is also covered, in-process, by test_mlflow_backend.py.
        pytest.param("thread", marks=pytest.mark.slow),
    ],
)
def test_sigkilled_trainer_reads_crashed_and_keeps_points_logged_before_the_loss_window(
    mlflow_dir: Path, writer: str
) -> None:
    env = {"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir), "MLTRACK_WRITER": writer}
    child = popen_python(_child(), env=env)
    run_id, logged, killed_at = kill_while_logging(child, seconds=3.0, min_lines=500)

    read = f"""
        import json, time
        from mltrack.factory import experiment_repository
        repo = experiment_repository()
        deadline = time.monotonic() + 60
        while True:  # the writer process stores what it received, then marks the run
            run = repo.get_experiment_sync({run_id!r})
            if run.status.value != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        steps = [int(s) for s in repo.get_experiment_metrics_sync({run_id!r}).series("loss").steps]
        print(json.dumps(dict(status=run.status.value, end=run.end_time is not None, steps=steps)))
    """
    got = run_python(read, env=env)
    assert got["status"] == "crashed"
    assert got["end"]
    assert_kept_before_window(logged, killed_at, LOSS_WINDOW, got["steps"])

    # MLflow itself shows the run finished: FAILED, with mltrack's status beside it.
    native = run_python(
        f"""
        import json, mlflow
        mlflow.set_tracking_uri("sqlite:///{mlflow_dir}/mlflow.db")
        (run,) = mlflow.search_runs(experiment_names=["crash"], output_format="list")
        print(json.dumps(dict(status=run.info.status, tag=run.data.tags.get("mltrack.status"),
                              end=run.info.end_time is not None)))
        """
    )
    assert native == {"status": "FAILED", "tag": "crashed", "end": True}
