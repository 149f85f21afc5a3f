"""A reader whose view of a run is older than the writer's finish does not mark it CRASHED."""

from __future__ import annotations

from pathlib import Path

from mltrack.config import BackendConfig
from mltrack.models import ExperimentStatus
from mltrack_tensorboard.backend import TensorboardBackend

from _child import popen_python

_WRITER = """
    import sys, mltrack
    run = mltrack.start_run("race")
    for step in range(50):
        run.log_metric("loss", float(step), step=step)
    assert mltrack.factory.tracking_session().flush(60)
    print("created", run.id, flush=True)
    assert sys.stdin.readline().strip() == "finish"
    run.finish()
"""


def test_a_run_read_running_before_its_writer_finished_and_exited_reads_completed(tb_dir: Path) -> None:
    env = {"ML_TRACKING_BACKEND": "tensorboard", "ML_STORAGE_PATH": str(tb_dir), "MLTRACK_WRITER": "thread"}
    child = popen_python(_WRITER, env=env, stdin=True)
    assert child.stdout is not None and child.stdin is not None
    reader = TensorboardBackend.from_config(BackendConfig("tensorboard", storage_path=str(tb_dir)))
    try:
        created = child.stdout.readline().split()
        assert created and created[0] == "created", child.stderr.read() if child.stderr else ""
        run_id = created[1]
        running = reader.mltrack_get_run(run_id)
        assert running is not None and running.status is ExperimentStatus.RUNNING
        stale = reader._meta(reader._folders[run_id])  # what a reader holds while the writer finishes
        assert stale is not None
        _, err = child.communicate("finish\n", timeout=120)
        assert child.returncode == 0, err[-3000:]
        assert reader._summary(stale).status is ExperimentStatus.COMPLETED  # the writer is gone now
    finally:
        if child.poll() is None:
            child.kill()
    again = TensorboardBackend.from_config(BackendConfig("tensorboard", storage_path=str(tb_dir)))
    stored = again.mltrack_get_run(run_id)
    assert stored is not None and stored.status is ExperimentStatus.COMPLETED
    assert stored.final_metrics == {"loss": 49.0}
