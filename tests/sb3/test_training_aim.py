"""Real SB3 training tracked into a real Aim repository, read back through mltrack's repository.

Budgets are tiny (a few hundred timesteps); what is checked is what was recorded, not
whether the agent learned.
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
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure

import mltrack
import mltrack.factory
from mltrack import ArtifactType, ExperimentStatus
from mltrack.factory import experiment_repository
from mltrack.repository import ExperimentRepository
from mltrack_sb3 import TrackingCallback

EVAL_FREQ = 200
SAVE_FREQ = 200

# algorithm, env, constructor settings that make a few hundred steps meaningful, timesteps
CASES: dict[str, tuple[type[BaseAlgorithm], str, dict[str, Any], int]] = {
    "PPO": (PPO, "CartPole-v1", {"n_steps": 100, "batch_size": 50, "n_epochs": 2}, 600),
    "DQN": (DQN, "CartPole-v1", {"learning_starts": 100, "train_freq": 4, "batch_size": 32}, 600),
    "SAC": (SAC, "Pendulum-v1", {"learning_starts": 100, "batch_size": 64, "buffer_size": 2000}, 600),
}


@attrs.frozen
class Trained:
    """One finished training run and where its outputs went."""

    name: str
    callback: TrackingCallback
    model: BaseAlgorithm
    sb3_dir: Path
    aim_dir: Path
    stdout: str


def _train(name: str, root: Path) -> Trained:
    algo, env_id, kwargs, steps = CASES[name]
    aim_dir = root / "aim_logs"
    with pytest.MonkeyPatch.context() as mp:
        # Configured the way users do it: environment variables only.
        mp.setenv("ML_TRACKING_BACKEND", "aim")
        mp.setenv("ML_STORAGE_PATH", str(aim_dir))
        mp.setenv("AIM_REPO_PATH", str(aim_dir))
        mltrack.reset_configuration()
        torch.set_num_threads(1)
        callback = TrackingCallback(
            f"{name}_test",
            config={"purpose": "integration test"},
            eval_freq=EVAL_FREQ,
            save_freq=SAVE_FREQ,
            n_eval_episodes=2,
            best_model_save_path=root / "models",
        )
        model = algo("MlpPolicy", env_id, seed=0, verbose=1, **kwargs)
        sb3_dir = root / "sb3_out"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            # SB3's stdout writer holds the stream it was made with: make it again inside.
            model.set_logger(configure(str(sb3_dir), ["stdout", "csv"]))
            model.learn(steps, callback=callback, log_interval=1)
        mltrack.factory.reset()
    mltrack.reset_configuration()
    return Trained(name, callback, model, sb3_dir, aim_dir, out.getvalue())


def _csv_rows(sb3_dir: Path) -> list[dict[str, str]]:
    with (sb3_dir / "progress.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Each algorithm trained once per module; the tests read what was recorded."""
    if importlib.util.find_spec("mltrack_aim") is None:
        pytest.skip("mltrack-aim is not installed")
    return _train(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture
def repo(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> ExperimentRepository:
    """The repository of the Aim store ``trained`` wrote to."""
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim")
    monkeypatch.setenv("ML_STORAGE_PATH", str(trained.aim_dir))
    monkeypatch.setenv("AIM_REPO_PATH", str(trained.aim_dir))
    mltrack.reset_configuration()
    return experiment_repository()


def test_run_ends_completed_with_config_and_final_metrics(
    trained: Trained, repo: ExperimentRepository
) -> None:
    name, callback, model = trained.name, trained.callback, trained.model
    summary = repo.get_experiment_sync(callback.run_id)
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.experiment_name == f"{name}_test"
    assert summary.config["algorithm"] == name
    assert summary.config["purpose"] == "integration test"
    assert summary.config["learning_rate"] == model.learning_rate
    assert summary.config["total_timesteps"] == model.num_timesteps
    assert not [k for k in summary.config if k.startswith("_")]
    assert summary.final_metrics["total_timesteps"] == model.num_timesteps
    assert summary.final_metrics["eval/best_mean_reward"] == callback.best_mean_reward
    assert summary.final_metrics["wall_time_seconds"] > 0


def test_sb3_logger_keys_are_metrics_at_the_dump_steps(trained: Trained, repo: ExperimentRepository) -> None:
    callback, sb3_dir = trained.callback, trained.sb3_dir
    rows = _csv_rows(sb3_dir)
    history = repo.get_experiment_metrics_sync(callback.run_id)
    numeric_keys = {k for row in rows for k, v in row.items() if v not in ("", None)}
    assert {"rollout/ep_rew_mean", "time/fps", "time/total_timesteps"} <= numeric_keys
    for key in numeric_keys:
        expected = {
            int(row["time/total_timesteps"]): float(row[key])
            for row in rows
            if row.get(key) not in ("", None)
        }
        series = history.series(key)
        tracked = dict(zip((int(s) for s in series.steps), (float(v) for v in series.values)))
        assert tracked == pytest.approx(expected), key


def test_every_finished_episode_is_tracked(trained: Trained, repo: ExperimentRepository) -> None:
    callback, model = trained.callback, trained.model
    monitor = model.get_env().envs[0]  # the Monitor SB3 wrapped around the env
    series = repo.get_experiment_metrics_sync(callback.run_id).series("episode/reward")
    assert list(series.values) == pytest.approx(monitor.get_episode_rewards())
    lengths = repo.get_experiment_metrics_sync(callback.run_id).series("episode/length")
    assert [int(v) for v in lengths.values] == monitor.get_episode_lengths()
    # each episode is tracked at the timestep that ended it
    assert [int(s) for s in series.steps] == list(_cumulative(monitor.get_episode_lengths()))


def _cumulative(lengths: list[int]) -> list[int]:
    total, out = 0, []
    for n in lengths:
        total += n
        out.append(total)
    return out


def test_evaluation_is_tracked_every_eval_freq(trained: Trained, repo: ExperimentRepository) -> None:
    callback, model = trained.callback, trained.model
    history = repo.get_experiment_metrics_sync(callback.run_id)
    expected_steps = list(range(EVAL_FREQ, model.num_timesteps + 1, EVAL_FREQ))
    for key in ("eval/mean_reward", "eval/std_reward", "eval/mean_ep_length"):
        assert [int(s) for s in history.series(key).steps] == expected_steps, key
    assert max(history.series("eval/mean_reward").values) == pytest.approx(callback.best_mean_reward)


def test_checkpoints_and_models_are_stored_artifacts_that_load(
    trained: Trained, repo: ExperimentRepository
) -> None:
    name, callback, model = trained.name, trained.callback, trained.model
    algo = CASES[name][0]
    artifacts = {a.name: a for a in repo.list_artifacts_sync(callback.run_id)}
    checkpoints = sorted(
        (a for a in artifacts.values() if a.artifact_type is ArtifactType.CHECKPOINT),
        key=lambda a: a.metadata["timesteps"],
    )
    assert [a.metadata["timesteps"] for a in checkpoints] == list(
        range(SAVE_FREQ, model.num_timesteps + 1, SAVE_FREQ)
    )
    best = artifacts["best_model.zip"]
    assert best.artifact_type is ArtifactType.MODEL
    assert best.metadata["score"] == pytest.approx(callback.best_mean_reward)
    assert Path(callback.best_model_path).is_file()
    final = artifacts["final_model.zip"]
    assert final.artifact_type is ArtifactType.MODEL
    for artifact in [*checkpoints, best, final]:
        assert Path(artifact.file_path).is_file(), artifact.name
        loaded = algo.load(artifact.file_path, device="cpu")
        assert isinstance(loaded, algo)


def test_sb3_stdout_and_csv_output_are_still_written(trained: Trained) -> None:
    model, sb3_dir, stdout = trained.model, trained.sb3_dir, trained.stdout
    assert "rollout/" in stdout or "train/" in stdout
    assert "total_timesteps" in stdout
    rows = _csv_rows(sb3_dir)
    assert rows
    # off-policy algorithms dump at episode ends, so the last row may be a little before the end
    assert 0 < int(rows[-1]["time/total_timesteps"]) <= model.num_timesteps


class _Boom(RuntimeError):
    pass


def test_an_exception_mid_training_ends_the_run_failed_and_propagates(aim_repo: Path, tmp_path: Path) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    class ExplodeAt(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 150:
                raise _Boom("env exploded at step 150")
            return True

    tracking = TrackingCallback("failing", best_model_save_path=tmp_path / "m")
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0)
    with pytest.raises(_Boom, match="exploded"):
        model.learn(1000, callback=[tracking, ExplodeAt()])
    summary = experiment_repository().get_experiment_sync(tracking.run_id)
    assert summary.status is ExperimentStatus.FAILED
    assert summary.config["error"]["type"] == "_Boom"
    assert "exploded" in summary.config["error"]["message"]
    # the metrics tracked before the failure are kept
    history = experiment_repository().get_experiment_metrics_sync(tracking.run_id)
    assert "rollout/ep_rew_mean" in history
    # the model is left as it was: no tracking wrappers in it
    assert "collect_rollouts" not in vars(model)
