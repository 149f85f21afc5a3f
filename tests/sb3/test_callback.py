"""TrackingCallback's behaviour, with real SB3 training on tiny budgets into the memory backend."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from stable_baselines3 import A2C, PPO, TD3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize

from mltrack import ArtifactType, ExperimentStatus
from mltrack.factory import experiment_repository, health_sync
from mltrack.tracker import ActiveRun
from mltrack_sb3 import TrackingCallback, TrackingFailureWarning, model_hyperparameters

pytestmark = pytest.mark.usefixtures("use_memory")


def _ppo(env: Any = "CartPole-v1", **kwargs: Any) -> PPO:
    settings = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "seed": 0, **kwargs}
    return PPO("MlpPolicy", env, **settings)


def test_config_is_the_models_hyperparameters_plus_the_users_config(tmp_path: Path) -> None:
    callback = TrackingCallback("cfg", config={"symbol": "EUR/USD", "gamma": 0.5})
    model = _ppo()
    model.learn(64, callback=callback)
    config = experiment_repository().get_experiment_sync(callback.run_id).config
    assert config["algorithm"] == "PPO"
    assert config["policy"] == "MlpPolicy"
    assert config["env_id"] == "CartPole-v1"
    assert config["n_envs"] == 1
    assert config["n_steps"] == 64
    assert config["learning_rate"] == 0.0003
    assert config["clip_range"] == 0.2  # a schedule, recorded as its starting value
    assert config["seed"] == 0
    assert config["total_timesteps"] == 64
    assert config["symbol"] == "EUR/USD"
    assert config["gamma"] == 0.5  # the user's value wins


def test_config_holds_plain_values_and_no_private_state() -> None:
    params = model_hyperparameters(_ppo())
    assert not [k for k in params if k.startswith("_")]
    for forbidden in ("env", "policy_class", "rollout_buffer", "ep_info_buffer", "lr_schedule"):
        assert forbidden not in params

    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)

    assert all(plain(v) for v in params.values())
    assert all(len(str(v)) <= 200 for v in params.values())


def test_the_mltrack_output_is_added_to_the_models_logger_and_removed_after() -> None:
    seen: list[list[str]] = []

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            if not seen:
                seen.append([type(f).__name__ for f in self.model.logger.output_formats])
            return True

    model = _ppo()
    logger = configure(None, ["stdout", "csv"])
    model.set_logger(logger)
    model.learn(64, callback=[TrackingCallback("out"), Spy()])
    assert seen == [["HumanOutputFormat", "CSVOutputFormat", "MLTrackOutputFormat"]]
    assert [type(f).__name__ for f in logger.output_formats] == ["HumanOutputFormat", "CSVOutputFormat"]


@pytest.mark.parametrize("algo", [A2C, TD3], ids=lambda a: a.__name__)
def test_a2c_and_td3_runs_complete_with_metrics_and_models(algo: type, tmp_path: Path) -> None:
    env = "CartPole-v1" if algo is A2C else "Pendulum-v1"
    extra = {"learning_starts": 50, "batch_size": 32} if algo is TD3 else {}
    callback = TrackingCallback(
        algo.__name__, eval_freq=200, n_eval_episodes=1, best_model_save_path=tmp_path
    )
    model = algo("MlpPolicy", env, seed=0, **extra)
    model.learn(400, callback=callback, log_interval=1)
    repo = experiment_repository()
    assert repo.get_experiment_sync(callback.run_id).status is ExperimentStatus.COMPLETED
    history = repo.get_experiment_metrics_sync(callback.run_id)
    assert [int(s) for s in history.series("eval/mean_reward").steps] == [200, 400]
    assert any(name.startswith("train/") for name in history.names)
    assert algo.load(callback.best_model_path).__class__ is algo


def test_vectorized_envs_track_every_episode_at_its_own_step(tmp_path: Path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    callback = TrackingCallback("vec", eval_freq=100, n_eval_episodes=1, best_model_save_path=tmp_path)
    model = _ppo(env, n_steps=32)
    model.learn(512, callback=callback)
    repo = experiment_repository()
    history = repo.get_experiment_metrics_sync(callback.run_id)
    rewards = history.series("episode/reward")
    finished = sum(len(m.get_episode_rewards()) for m in env.envs)  # type: ignore[attr-defined]
    assert len(rewards) == finished
    assert len(set(rewards.steps)) == finished
    # 4 envs step 4 timesteps at a time: evaluations at each multiple of 100 reached, and one
    # more at the end (eval_at_end) since the last one was before it
    assert [int(s) for s in history.series("eval/mean_reward").steps] == [100, 200, 300, 400, 500, 512]
    assert repo.get_experiment_sync(callback.run_id).config["n_envs"] == 4


def test_works_in_a_callback_list_next_to_sb3s_eval_and_checkpoint_callbacks(tmp_path: Path) -> None:
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    sb3_eval = EvalCallback(
        eval_env, eval_freq=128, n_eval_episodes=1, best_model_save_path=str(tmp_path / "sb3")
    )
    sb3_ckpt = CheckpointCallback(save_freq=128, save_path=str(tmp_path / "sb3_ckpt"))
    tracking = TrackingCallback("list", save_freq=128, best_model_save_path=tmp_path / "ours")
    model = _ppo()
    model.learn(256, callback=CallbackList([sb3_eval, sb3_ckpt, tracking]))
    repo = experiment_repository()
    assert repo.get_experiment_sync(tracking.run_id).status is ExperimentStatus.COMPLETED
    # SB3's own files are written, and load: the tracking guard never leaks into a save
    for path in [tmp_path / "sb3" / "best_model.zip", *sorted((tmp_path / "sb3_ckpt").glob("*.zip"))]:
        assert PPO.load(path).__class__ is PPO
    # EvalCallback's values reach mltrack through the logger
    history = repo.get_experiment_metrics_sync(tracking.run_id)
    assert "eval/mean_reward" in history
    kinds = [a.artifact_type for a in repo.list_artifacts_sync(tracking.run_id)]
    assert kinds.count(ArtifactType.CHECKPOINT) == 2


def test_eval_env_is_used_when_given(tmp_path: Path) -> None:
    import gymnasium as gym

    eval_env = gym.make("CartPole-v1", max_episode_steps=7)
    callback = TrackingCallback("given", eval_freq=64, eval_env=eval_env, n_eval_episodes=2)
    _ppo().learn(64, callback=callback)
    history = experiment_repository().get_experiment_metrics_sync(callback.run_id)
    assert history.series("eval/mean_ep_length").values[0] <= 7


def test_a_vecnormalize_training_env_is_evaluated_with_its_statistics(tmp_path: Path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    callback = TrackingCallback("norm", eval_freq=128, n_eval_episodes=1, best_model_save_path=tmp_path)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0)
    model.learn(128, callback=callback)
    names = [a.name for a in experiment_repository().list_artifacts_sync(callback.run_id)]
    assert "vecnormalize.pkl" in names
    assert experiment_repository().get_experiment_metrics_sync(callback.run_id).series("eval/mean_reward")


def test_a_keyboard_interrupt_ends_the_run_interrupted() -> None:
    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 40:
                raise KeyboardInterrupt
            return True

    tracking = TrackingCallback("ctrl-c")
    model = _ppo()
    with pytest.raises(KeyboardInterrupt):
        model.learn(200, callback=[tracking, CtrlC()])
    summary = experiment_repository().get_experiment_sync(tracking.run_id)
    assert summary.status is ExperimentStatus.INTERRUPTED
    assert "error" not in summary.config


def test_an_exception_in_train_ends_the_run_failed() -> None:
    tracking = TrackingCallback("train-fails")
    model = _ppo()

    def broken_train() -> None:
        raise FloatingPointError("loss is nan")

    model.train = broken_train  # type: ignore[method-assign]
    with pytest.raises(FloatingPointError):
        model.learn(200, callback=tracking)
    summary = experiment_repository().get_experiment_sync(tracking.run_id)
    assert summary.status is ExperimentStatus.FAILED
    assert summary.config["error"]["message"] == "loss is nan"
    assert vars(model)["train"] is broken_train  # the model's own attribute is given back


def test_a_tracking_failure_never_stops_training_warns_once_and_shows_in_health(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ActiveRun, "log_metrics", failing)
    callback = TrackingCallback("failing-store")
    model = _ppo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(256, callback=callback)
    ours = [w for w in caught if issubclass(w.category, TrackingFailureWarning)]
    assert len(ours) == 1
    assert "disk full" in str(ours[0].message)
    assert callback.tracking_failures > 1
    assert model.num_timesteps == 256
    assert experiment_repository().get_experiment_sync(callback.run_id).status is ExperimentStatus.COMPLETED
    health = health_sync()
    assert not health.is_healthy
    assert any("disk full" in issue for issue in health.issues)


def test_training_runs_even_when_no_backend_can_be_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mltrack

    mltrack.configure_backend("no-such-backend")
    callback = TrackingCallback("nowhere", save_freq=64, best_model_save_path=tmp_path)
    model = _ppo()
    with pytest.warns(TrackingFailureWarning, match="no-such-backend"):
        model.learn(128, callback=callback)
    assert model.num_timesteps == 128
    assert callback.run is None
    assert len(callback.checkpoint_paths) == 2  # files are still saved
    assert not health_sync().is_healthy


def test_each_learn_call_is_a_run_of_its_own() -> None:
    callback = TrackingCallback("twice")
    model = _ppo()
    model.learn(64, callback=callback)
    first = callback.run_id
    model.learn(64, callback=callback, reset_num_timesteps=False)
    repo = experiment_repository()
    assert first != callback.run_id
    assert repo.get_experiment_sync(first).status is ExperimentStatus.COMPLETED
    second = repo.get_experiment_metrics_sync(callback.run_id)
    assert min(second.series("rollout/ep_rew_mean").steps) > 64
