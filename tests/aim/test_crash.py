"""A training process killed by SIGKILL: its run reads CRASHED, its logged points survive.

The child logs through mltrack's public API and prints ``<step> <time>`` after each log
call returned. The core writer hands points to the backend every ``flush_interval`` (0.1 s)
from a buffer in the training process (thread mode), so a SIGKILL loses at most what was
logged in the last flush interval plus the batch being written: the loss window.
"""

from __future__ import annotations

from pathlib import Path

import mltrack
from mltrack import ExperimentStatus
from mltrack_aim import configure_aim_backend

from _child import assert_kept_before_window, kill_while_logging, logging_trainer, popen_python, run_python

LOSS_WINDOW = 1.0
"""Seconds before the kill within which logged points may be lost (flush interval + one batch write)."""


def _child(repo: Path) -> str:
    setup = f"""
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={str(repo)!r}, experiment_name="crash")
        run = mltrack.start_run(config={{"learning_rate": 0.001}})
    """
    return logging_trainer(setup, value="float(step)", pause_every=50, pause=0.005)


def test_sigkilled_writer_reads_crashed_and_keeps_points_logged_before_the_loss_window(
    aim_repo: Path,
) -> None:
    child = popen_python(_child(aim_repo))
    run_id, logged, killed_at = kill_while_logging(child, seconds=4.0, min_lines=2000)

    got = run_python(
        f"""
        import json, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={str(aim_repo)!r})
        repo = mltrack.factory.experiment_repository()
        run = repo.get_experiment_sync({run_id!r})
        steps = [int(s) for s in repo.get_experiment_metrics_sync({run_id!r}).series("loss").steps]
        print(json.dumps(dict(status=run.status.value, end=run.end_time is not None, steps=steps)))
        """
    )
    assert got["status"] == "crashed"
    assert got["end"]
    assert_kept_before_window(logged, killed_at, LOSS_WINDOW, got["steps"])
    stored = set(got["steps"])
    last_stored_at = dict(logged).get(max(stored), killed_at)
    print(
        f"loss window observed: {killed_at - last_stored_at:.3f} s "
        f"({len(logged) - len(stored)} of {len(logged)} returned log calls lost)"
    )

    # Aim itself now shows the run finished (closed, with mltrack's status on it).
    aim_view = run_python(
        f"""
        import json, aim
        run = aim.Repo({str(aim_repo)!r}).get_run({run_id!r})
        print(json.dumps(dict(active=run.active, status=run["mltrack"]["status"])))
        """
    )
    assert aim_view == {"active": False, "status": "crashed"}

    # The repository still takes new runs.
    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("after-crash") as fresh:
        fresh.log_metric("loss", 1.0, step=0)
    repo = mltrack.factory.experiment_repository()
    assert repo.get_experiment_sync(fresh.id).status is ExperimentStatus.COMPLETED
    assert repo.get_experiment_sync(run_id).status is ExperimentStatus.CRASHED


def test_run_closed_by_aim_but_never_finished_reads_crashed(aim_repo: Path) -> None:
    """What an aim server does to the runs of a client that stopped sending heartbeats."""
    from mltrack.config import BackendConfig
    from mltrack.models import ExperimentRun
    from mltrack_aim.backend import AimBackend

    backend = AimBackend.from_config(BackendConfig("aim", options={"repo_path": str(aim_repo)}))
    run = ExperimentRun(id="c" * 24, experiment_name="dropped")
    backend.mltrack_create_run(run)
    backend._release(run.id)  # Aim closes the run; mltrack's finish never comes
    summary = backend.mltrack_get_run(run.id)
    assert summary is not None and summary.status is ExperimentStatus.CRASHED
    assert summary.end_time is not None
    backend.close()
