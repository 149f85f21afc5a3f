"""SB3 training resumed from a checkpoint in a new process continues the same mltrack run.

PPO trains 200 timesteps on CartPole with ``TrackingCallback`` into a real Aim repository and
saves a checkpoint; a second Python process loads it and trains 200 more with
``learn(..., reset_num_timesteps=False)`` and ``TrackingCallback(resume=<run id>)``. The store
then holds one run, resumed once, whose ``time/total_timesteps`` history runs on across the two
processes: every step once, each at its own ``num_timesteps``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stable_baselines3 import PPO

import mltrack
import mltrack.factory
from mltrack import ExperimentStatus
from mltrack.errors import RunNotFoundError
from mltrack_sb3 import TrackingCallback

from _child import run_python

PPO_SETTINGS = {"n_steps": 100, "batch_size": 50, "n_epochs": 1}
"""Tiny: a rollout (and a log dump) every 100 timesteps."""


def test_checkpoint_resumed_in_a_new_process_continues_num_timesteps_in_one_run(tmp_path: Path) -> None:
    aim_dir = tmp_path / "aim_logs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML_TRACKING_BACKEND", "aim")
        mp.setenv("ML_STORAGE_PATH", str(aim_dir))
        mp.setenv("MLTRACK_WRITER", "thread")  # one process less; tests/reliability resume through it
        mltrack.reset_configuration()
        callback = TrackingCallback("PPO_resume", config={"part": 1}, eval_at_end=False)
        model = PPO("MlpPolicy", "CartPole-v1", seed=0, **PPO_SETTINGS)
        model.learn(200, callback=callback)
        checkpoint = tmp_path / "checkpoint.zip"
        model.save(checkpoint)
        run_id = callback.run_id
        assert run_id is not None and model.num_timesteps == 200
        mltrack.factory.reset()
    mltrack.reset_configuration()

    resumed = run_python(
        f"""
        import json, gymnasium as gym, torch
        from stable_baselines3 import PPO
        from mltrack_sb3 import TrackingCallback
        torch.set_num_threads(1)
        model = PPO.load({str(checkpoint)!r}, env=gym.make("CartPole-v1"))
        callback = TrackingCallback(config={{"part": 2}}, eval_at_end=False, resume={run_id[:8]!r})
        model.learn(200, callback=callback, reset_num_timesteps=False)
        print(json.dumps(dict(run_id=callback.run_id, num_timesteps=model.num_timesteps,
                              failures=callback.tracking_failures)))
        """,
        env={"ML_TRACKING_BACKEND": "aim", "ML_STORAGE_PATH": str(aim_dir), "MLTRACK_WRITER": "thread"},
        clean=True,
    )
    assert resumed == {"run_id": run_id, "num_timesteps": 400, "failures": 0}

    with mltrack.open_repository("aim", repo_path=str(aim_dir), must_exist=True) as repo:
        runs = repo.list_experiments_sync()
        assert [r.experiment_id for r in runs] == [run_id], "one run, not a second one"
        run = runs[0]
        assert run.status is ExperimentStatus.COMPLETED and run.resumed == 1
        assert run.config["part"] == 2 and run.config["n_steps"] == 100
        assert run.final_metrics["total_timesteps"] == 400.0
        history = repo.get_experiment_metrics_sync(run_id).series("time/total_timesteps")
    # SB3 dumps after each rollout: 100, 200 from the first process, 300, 400 from the second.
    assert list(history.steps) == [100, 200, 300, 400]
    assert [int(v) for v in history.values] == [100, 200, 300, 400]


def test_resume_of_an_unknown_run_stops_training_at_start(use_memory: None) -> None:
    """An id that names no run raises at training start: no training goes untracked or into a new run."""
    with pytest.raises(ValueError, match="resume"):
        TrackingCallback(resume="  ")
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=16, batch_size=16, n_epochs=1)
    with pytest.raises(RunNotFoundError, match="cannot resume"):
        model.learn(16, callback=TrackingCallback(resume="0123456789ab"))
    assert model.num_timesteps == 0
    assert mltrack.factory.experiment_repository().list_experiments_sync() == []
