"""SB3's ``TrackingCallback`` unchanged, with only ``ML_TRACKING_BACKEND=aim,tensorboard`` set: both
stores receive the run, and the TensorBoard copy reads back equal to Aim's and shows in TensorBoard's
own reader with its hyperparameters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from mltrack.factory import open_repository
from mltrack.models import ExperimentStatus, MetricSeries

from _child import env_without

TRAIN = """
import torch
from stable_baselines3 import PPO
from mltrack_sb3 import TrackingCallback
torch.set_num_threads(1)
callback = TrackingCallback("PPO_tensorboard", config={"purpose": "fan-out test", "net": {"layers": [64, 64]}})
model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=64, batch_size=32, n_epochs=2, device="cpu")
model.learn(total_timesteps=256, callback=callback)
print(callback.run.id)
"""

READ_WITH_EVENT_ACCUMULATOR = """
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.TENSORS: 0})
acc.Reload()
start = plugin_data_pb2.HParamsPluginData.FromString(
    acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
).session_start_info
print(json.dumps({"tags": sorted(acc.Tags()["tensors"]), "hparams": sorted(start.hparams)}))
"""


def _plain(series: list[MetricSeries]) -> list[tuple[Any, ...]]:
    return sorted(
        (s.name, sorted(dict(s.context).items()), [int(x) for x in s.steps], [float(x) for x in s.values])
        for s in series
    )


def test_sb3_callback_fans_out_to_aim_and_tensorboard(tmp_path: Path, aim_repo: Path) -> None:
    tb_dir = tmp_path / "tb_logs"
    env = env_without(("ML_", "MLTRACK_", "AIM_"))
    env.update(
        ML_TRACKING_BACKEND="aim,tensorboard", AIM_REPO_PATH=str(aim_repo), ML_STORAGE_PATH=str(tb_dir)
    )
    trained = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = trained.stdout.strip().splitlines()[-1]

    with open_repository("tensorboard", must_exist=True, logdir=str(tb_dir)) as tb:
        in_tb = tb.get_experiment_sync(run_id)
        tb_history = tb.get_experiment_metrics_sync(run_id).all_series
    with open_repository("aim", must_exist=True, repo_path=str(aim_repo)) as aim:
        in_aim = aim.get_experiment_sync(run_id)
        aim_history = aim.get_experiment_metrics_sync(run_id).all_series
    assert in_tb.status is ExperimentStatus.COMPLETED
    assert in_tb.config == in_aim.config and in_tb.config["purpose"] == "fan-out test"
    assert in_tb.final_metrics == in_aim.final_metrics
    assert len(tb_history) > 3
    assert _plain(tb_history) == _plain(aim_history)

    (folder,) = tb_dir.glob(f"*/*-{run_id}")
    seen = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(READ_WITH_EVENT_ACCUMULATOR), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seen.returncode == 0, seen.stderr[-3000:]
    native = json.loads(seen.stdout.strip().splitlines()[-1])
    assert {s.name for s in tb_history if not s.context} <= set(native["tags"])
    assert {"purpose", "net.layers"} <= set(native["hparams"])
