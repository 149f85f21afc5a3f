"""The migration path: a run SB3 wrote itself with ``tensorboard_log=`` is listed by mltrack and
copied into Aim with ``mltrack copy``, every point (step, value, time) arriving as TensorBoard holds it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from mltrack.factory import open_repository
from mltrack.models import ExperimentStatus, MetricSeries

TRAIN_WITH_SB3 = """
import sys
from stable_baselines3 import PPO
model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0,
            tensorboard_log=sys.argv[1], device="cpu")
model.learn(total_timesteps=320, tb_log_name="PPO")
"""


def _plain(series: list[MetricSeries]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            s.name,
            sorted(dict(s.context).items()),
            [int(x) for x in s.steps],
            [float(x) for x in s.values],
            [round(float(t), 3) for t in (s.timestamps if s.timestamps is not None else ())],
        )
        for s in series
    )


def test_an_sb3_tensorboard_log_run_copies_into_aim_with_equal_histories(
    tmp_path: Path, aim_repo: Path
) -> None:
    tb_log = tmp_path / "sb3_tensorboard"
    trained = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN_WITH_SB3), str(tb_log)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert [p.name for p in tb_log.iterdir()] == ["PPO_1"]  # SB3's own layout, nothing of mltrack's

    with open_repository("tensorboard", must_exist=True, logdir=str(tb_log)) as source:
        (run,) = source.list_experiments_sync()
        assert run.name == "PPO_1" and run.status is ExperimentStatus.COMPLETED
        history = source.get_experiment_metrics_sync(run.experiment_id).all_series
    names = {s.name for s in history}
    assert {"rollout/ep_rew_mean", "train/loss", "time/fps"} <= names

    copied = subprocess.run(
        [
            sys.executable,
            "-m",
            "mltrack",
            "copy",
            "--from",
            "tensorboard",
            "--to",
            "aim",
            "--from-option",
            f"logdir={tb_log}",
            "--to-option",
            f"repo_path={aim_repo}",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert copied.returncode == 0, copied.stderr[-3000:]
    report = json.loads(copied.stdout)
    assert report["copied"] == [run.experiment_id]
    assert report["points"] == sum(len(s) for s in history)

    with open_repository("aim", must_exist=True, repo_path=str(aim_repo)) as target:
        in_aim = target.get_experiment_sync(run.experiment_id)
        aim_history = target.get_experiment_metrics_sync(run.experiment_id).all_series
    assert in_aim.name == "PPO_1" and in_aim.status is ExperimentStatus.COMPLETED
    assert in_aim.start_time == run.start_time
    assert _plain(aim_history) == _plain(history)
