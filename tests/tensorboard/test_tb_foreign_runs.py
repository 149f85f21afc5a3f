"""Runs TensorBoard wrote itself (a plain tensorboardX ``SummaryWriter``) read through mltrack: listed
by ``mltrack ls``, and their scalars equal to what TensorBoard's ``EventAccumulator`` reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator as ea

from mltrack.factory import open_repository
from mltrack.models import ExperimentStatus

from _child import env_without


def _write_plain_run(folder: Path) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step in range(0, 500, 5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), global_step=step)
        if step % 50 == 0:
            writer.add_scalar("eval/reward", step * 0.25, global_step=step)
    writer.add_text("notes", "not a scalar", global_step=0)
    writer.close()


def test_a_summarywriter_run_reads_back_equal_to_event_accumulator(tb_dir: Path) -> None:
    folder = tb_dir / "baseline" / "plain"
    _write_plain_run(folder)
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    acc.Reload()

    with open_repository("tensorboard", must_exist=True, logdir=str(tb_dir)) as repo:
        (run,) = repo.list_experiments_sync()
        history = repo.get_experiment_metrics_sync(run.experiment_id)
    assert (run.name, run.experiment_name, run.status) == ("plain", "baseline", ExperimentStatus.COMPLETED)
    assert run.final_metrics == {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()[ea.SCALARS]}
    assert sorted(history.names) == sorted(acc.Tags()[ea.SCALARS])
    for tag in acc.Tags()[ea.SCALARS]:
        native = acc.Scalars(tag)
        series = history.series(tag)
        assert [int(s) for s in series.steps] == [e.step for e in native]
        assert [float(v) for v in series.values] == [e.value for e in native]
        assert [float(t) for t in series.timestamps or []] == [e.wall_time for e in native]


def test_mltrack_ls_lists_tensorboards_own_runs_beside_mltracks(tb_dir: Path) -> None:
    _write_plain_run(tb_dir / "PPO_1")
    env = env_without(("ML_", "MLTRACK_"))
    env.update(ML_TRACKING_BACKEND="tensorboard", ML_STORAGE_PATH=str(tb_dir))
    listed = subprocess.run(
        [sys.executable, "-m", "mltrack", "ls"], capture_output=True, text=True, timeout=120, env=env
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "PPO_1" in listed.stdout
