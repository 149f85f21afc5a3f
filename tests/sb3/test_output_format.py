"""MLTrackOutputFormat on its own: for users who configure SB3's logger themselves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import HParam, Image, Logger, configure

import mltrack
from mltrack import ExperimentStatus
from mltrack.factory import experiment_repository
from mltrack_sb3 import MLTrackOutputFormat

pytestmark = pytest.mark.usefixtures("use_memory")


def test_every_numeric_value_is_tracked_at_the_dump_step_whatever_the_key() -> None:
    run = mltrack.start_run("kv")
    logger = Logger(folder=None, output_formats=[MLTrackOutputFormat(run)])
    logger.record("loss", 0.5)
    logger.record("train/loss", np.float32(0.25))
    logger.record("a/b/c", torch.tensor(3.0))
    logger.record("count", 7)
    logger.record("note", "text is not a metric")
    logger.record("picture", Image(np.zeros((2, 2, 3)), "HWC"))
    logger.record("hidden", 1.0, exclude="mltrack")
    logger.record("hparams", HParam({"lr": 0.1}, {"loss": 0}))
    logger.dump(step=1000)
    run.finish()
    repo = experiment_repository()
    history = repo.get_experiment_metrics_sync(run.id)
    assert sorted(history.names) == ["a/b/c", "count", "loss", "train/loss"]
    assert list(history.series("a/b/c").steps) == [1000]
    assert history.series("train/loss").values[0] == pytest.approx(0.25)
    assert repo.get_experiment_sync(run.id).config["lr"] == 0.1


def test_keys_mltrack_cannot_store_are_skipped_with_one_warning() -> None:
    run = mltrack.start_run("bad-keys")
    output = MLTrackOutputFormat(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output.write({"x" * 300: 1.0, "ok": 2.0}, {}, step=1)
        output.write({"x" * 300: 1.0, "ok": 3.0}, {}, step=2)
    assert [str(w.message) for w in caught if "SB3 key" in str(w.message)] != []
    assert len(caught) == 1
    run.finish()
    history = experiment_repository().get_experiment_metrics_sync(run.id)
    assert history.names == ["ok"]
    assert list(history.series("ok").values) == [2.0, 3.0]


def test_log_interval_tracks_every_nth_dump() -> None:
    run = mltrack.start_run("interval")
    output = MLTrackOutputFormat(run, log_interval=3)
    for step in range(1, 8):
        output.write({"v": float(step)}, {}, step=step)
    run.finish()
    series = experiment_repository().get_experiment_metrics_sync(run.id).series("v")
    assert list(series.steps) == [1, 4, 7]


def test_without_a_run_it_starts_one_and_finishes_it_when_the_logger_closes(tmp_path: object) -> None:
    output = MLTrackOutputFormat(experiment_name="own-run", config={"who": "me"})
    logger = configure(None, ["csv"])
    logger.output_formats.append(output)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0)
    model.set_logger(logger)
    model.learn(128)
    logger.close()
    assert output.run is None
    (summary,) = experiment_repository().list_experiments_sync(name="own-run")
    assert summary.status is ExperimentStatus.COMPLETED
    assert summary.config == {"who": "me"}
    history = experiment_repository().get_experiment_metrics_sync(summary.experiment_id)
    assert list(history.series("time/total_timesteps").steps) == [64, 128]
