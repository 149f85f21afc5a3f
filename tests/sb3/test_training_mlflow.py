"""Real SB3 PPO training tracked into MLflow with only ``ML_TRACKING_BACKEND=mlflow`` changed.

The same callback and training code as test_training_aim.py; the store is MLflow's SQLite
database, read back through mltrack's repository and through MLflow's own API. The budget is
tiny (600 timesteps): what is checked is what was recorded, not whether the agent learned.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
from pathlib import Path

import attrs
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import mltrack
import mltrack.factory
from mltrack import ArtifactType, ExperimentStatus
from mltrack.factory import experiment_repository
from mltrack.repository import ExperimentRepository
from mltrack_sb3 import TrackingCallback

EVAL_FREQ = 200
SAVE_FREQ = 200
TIMESTEPS = 600

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mltrack_mlflow") is None, reason="mltrack-mlflow is not installed"
)


@attrs.frozen
class Trained:
    """The finished training run and where its outputs went."""

    callback: TrackingCallback
    model: PPO
    sb3_dir: Path
    store: Path
    stdout: str


def _env(store: Path) -> dict[str, str]:
    # Configured the way users do it: environment variables only, the backend name changed.
    return {
        "ML_TRACKING_BACKEND": "mlflow",
        "ML_STORAGE_PATH": str(store),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """PPO trained once for the module; the tests read what was recorded."""
    root = tmp_path_factory.mktemp("ppo-mlflow")
    store = root / "mlflow_logs"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for key, value in _env(store).items():
            mp.setenv(key, value)
        mltrack.reset_configuration()
        torch.set_num_threads(1)
        callback = TrackingCallback(
            "PPO_mlflow_test",
            config={"purpose": "integration test", "net": {"layers": [64, 64]}},
            eval_freq=EVAL_FREQ,
            save_freq=SAVE_FREQ,
            n_eval_episodes=2,
            best_model_save_path=root / "models",
        )
        model = PPO("MlpPolicy", "CartPole-v1", seed=0, verbose=1, n_steps=100, batch_size=50, n_epochs=2)
        sb3_dir = root / "sb3_out"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            model.set_logger(configure(str(sb3_dir), ["stdout", "csv"]))
            model.learn(TIMESTEPS, callback=callback, log_interval=1)
        mltrack.factory.reset()
    mltrack.reset_configuration()
    return Trained(callback, model, sb3_dir, store, out.getvalue())


@pytest.fixture
def repo(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> ExperimentRepository:
    """The repository of the MLflow store ``trained`` wrote to."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in _env(trained.store).items():
        monkeypatch.setenv(key, value)
    mltrack.reset_configuration()
    return experiment_repository()


def test_run_ends_completed_with_config_final_metrics_and_sb3_logger_metrics(
    trained: Trained, repo: ExperimentRepository
) -> None:
    callback, model = trained.callback, trained.model
    summary = repo.get_experiment_sync(callback.run_id)
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.experiment_name == "PPO_mlflow_test"
    assert summary.config["algorithm"] == "PPO"
    assert summary.config["net"] == {"layers": [64, 64]}
    assert summary.config["learning_rate"] == model.learning_rate
    assert summary.final_metrics["total_timesteps"] == model.num_timesteps
    assert summary.final_metrics["eval/best_mean_reward"] == callback.best_mean_reward

    with (trained.sb3_dir / "progress.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    history = repo.get_experiment_metrics_sync(callback.run_id)
    for key in ("rollout/ep_rew_mean", "time/fps", "train/loss"):
        expected = {int(r["time/total_timesteps"]): float(r[key]) for r in rows if r.get(key)}
        series = history.series(key)
        assert dict(zip((int(s) for s in series.steps), (float(v) for v in series.values))) == pytest.approx(
            expected
        ), key
    monitor = model.get_env().envs[0]
    assert list(history.series("episode/reward").values) == pytest.approx(monitor.get_episode_rewards())
    expected_steps = list(range(EVAL_FREQ, model.num_timesteps + 1, EVAL_FREQ))
    assert [int(s) for s in history.series("eval/mean_reward").steps] == expected_steps


def test_models_and_checkpoints_are_mlflow_artifacts_that_load(
    trained: Trained, repo: ExperimentRepository
) -> None:
    callback, model = trained.callback, trained.model
    artifacts = {a.name: a for a in repo.list_artifacts_sync(callback.run_id)}
    checkpoints = [a for a in artifacts.values() if a.artifact_type is ArtifactType.CHECKPOINT]
    assert sorted(a.metadata["timesteps"] for a in checkpoints) == list(
        range(SAVE_FREQ, model.num_timesteps + 1, SAVE_FREQ)
    )
    for name in ("best_model.zip", "final_model.zip"):
        assert artifacts[name].artifact_type is ArtifactType.MODEL
        loaded = PPO.load(artifacts[name].file_path, device="cpu")
        assert isinstance(loaded, PPO)
    # the files live in the run's MLflow artifact folder
    assert all(trained.store in Path(a.file_path).parents for a in artifacts.values())


def test_mlflow_shows_the_training_run(trained: Trained) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{trained.store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("PPO_mlflow_test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrack.run_id"] == trained.callback.run_id
    assert run.data.params["algorithm"] == "PPO"
    assert run.data.params["net.layers"] == "[64, 64]"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "rollout/ep_rew_mean")]
    assert steps and steps == sorted(steps)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"best_model.zip", "final_model.zip"} <= files
