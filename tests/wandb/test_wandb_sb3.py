"""Real SB3 PPO training tracked into W&B run folders with only ``ML_TRACKING_BACKEND`` changed.

The same callback and training code as tests/sb3: ``ML_TRACKING_BACKEND=wandb``, and the fan-out
``aim,wandb`` writing one run to both stores. The budget is tiny (600 timesteps): what is
checked is what was recorded, not whether the agent learned.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from _wandb_native import leet_history, leet_summary
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import mltrack
import mltrack.factory
from mltrack import ArtifactType, ExperimentStatus
from mltrack.factory import open_repository
from mltrack_sb3 import TrackingCallback

EVAL_FREQ = 200
SAVE_FREQ = 200
TIMESTEPS = 600


@attrs.frozen
class Trained:
    """A finished training run and where its outputs went."""

    callback: TrackingCallback
    model: PPO
    sb3_dir: Path
    wandb_root: Path


def _train(root: Path, env: dict[str, str]) -> Trained:
    """PPO with ``TrackingCallback``, configured through the environment only, as users do."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(root)
        mltrack.reset_configuration()
        torch.set_num_threads(1)
        callback = TrackingCallback(
            "PPO_wandb_test",
            config={"purpose": "integration test", "net": {"layers": [64, 64]}},
            eval_freq=EVAL_FREQ,
            save_freq=SAVE_FREQ,
            n_eval_episodes=2,
            best_model_save_path=root / "models",
        )
        model = PPO("MlpPolicy", "CartPole-v1", seed=0, verbose=1, n_steps=100, batch_size=50, n_epochs=2)
        sb3_dir = root / "sb3_out"
        with contextlib.redirect_stdout(io.StringIO()):
            model.set_logger(configure(str(sb3_dir), ["stdout", "csv"]))
            model.learn(TIMESTEPS, callback=callback, log_interval=1)
        mltrack.factory.reset()
    mltrack.reset_configuration()
    return Trained(callback, model, sb3_dir, Path(env["ML_STORAGE_PATH"]))


def _check_wandb_run(trained: Trained) -> dict[str, Any]:
    """What a user checks of the run in the W&B store; returns its points for comparisons."""
    callback, model = trained.callback, trained.model
    with open_repository("wandb", storage_path=str(trained.wandb_root)) as repo:
        summary = repo.get_experiment_sync(callback.run_id)
        history = repo.get_experiment_metrics_sync(callback.run_id)
        artifacts = {a.name: a for a in repo.list_artifacts_sync(callback.run_id)}
        points = sorted((p.name, sorted(p.context.items()), p.step, p.value) for p in history)
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.experiment_name == "PPO_wandb_test"
    assert summary.config["algorithm"] == "PPO"
    assert summary.config["net"] == {"layers": [64, 64]}
    assert summary.final_metrics["total_timesteps"] == model.num_timesteps
    with (trained.sb3_dir / "progress.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for key in ("rollout/ep_rew_mean", "time/fps", "train/loss"):
        expected = {int(r["time/total_timesteps"]): float(r[key]) for r in rows if r.get(key)}
        series = history.series(key)
        got = dict(zip((int(s) for s in series.steps), (float(v) for v in series.values)))
        assert got == pytest.approx(expected), key
    checkpoints = [a for a in artifacts.values() if a.artifact_type is ArtifactType.CHECKPOINT]
    assert sorted(a.metadata["timesteps"] for a in checkpoints) == list(
        range(SAVE_FREQ, model.num_timesteps + 1, SAVE_FREQ)
    )
    for name in ("best_model.zip", "final_model.zip"):
        assert artifacts[name].artifact_type is ArtifactType.MODEL
        assert isinstance(PPO.load(artifacts[name].file_path, device="cpu"), PPO)

    # W&B's own reader: a finished run of project PPO_wandb_test with SB3's metrics in its history.
    (folder,) = (trained.wandb_root / "wandb").glob(f"offline-run-*-{callback.run_id}")
    native = leet_summary(folder)
    assert native["state"] == "finished" and native["project"] == "PPO_wandb_test"
    assert native["config"]["algorithm"] == "PPO"
    assert {"rollout/ep_rew_mean", "train/loss", "eval/mean_reward"} <= set(leet_history(folder))
    return {"points": points, "artifacts": sorted((a.name, a.sha256) for a in artifacts.values())}


def test_sb3_callback_tracks_into_wandb_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "train"
    root.mkdir()
    trained = _train(root, {"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(tmp_path / "wandb_logs")})
    _check_wandb_run(trained)


@pytest.mark.skipif(importlib.util.find_spec("mltrack_aim") is None, reason="mltrack-aim is not installed")
def test_sb3_callback_fans_out_to_aim_and_wandb_with_equal_histories(tmp_path: Path, aim_repo: Path) -> None:
    root = tmp_path / "train"
    root.mkdir()
    env = {
        "ML_TRACKING_BACKEND": "aim,wandb",
        "AIM_REPO_PATH": str(aim_repo),
        "ML_STORAGE_PATH": str(tmp_path / "wandb_logs"),
    }
    trained = _train(root, env)
    from_wandb = _check_wandb_run(trained)
    with open_repository("aim", repo_path=str(aim_repo)) as aim:
        run = aim.get_experiment_sync(trained.callback.run_id)
        points = sorted(
            (p.name, sorted(p.context.items()), p.step, p.value)
            for p in aim.get_experiment_metrics_sync(trained.callback.run_id)
        )
        artifacts = sorted((a.name, a.sha256) for a in aim.list_artifacts_sync(trained.callback.run_id))
    assert run.status is ExperimentStatus.COMPLETED
    assert points == from_wandb["points"]
    assert artifacts == from_wandb["artifacts"]
