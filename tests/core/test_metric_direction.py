"""Which way a metric improves, guessed from its name: one rule for ls --sort and compare's star."""

from __future__ import annotations

import pytest

from mltrack.repository import metric_direction


@pytest.mark.parametrize(
    "metric",
    [
        "reward",
        "eval/mean_reward",
        "rollout/ep_rew_mean",
        "accuracy",
        "val_acc",
        "episode_return",
        "score",
        "win_rate",
    ],
)
def test_rewards_accuracies_returns_and_scores_are_higher_is_better(metric: str) -> None:
    assert metric_direction(metric) == 1


@pytest.mark.parametrize(
    "metric", ["loss", "train/value_loss", "valloss", "error", "test_error_rate", "max_drawdown"]
)
def test_losses_and_errors_are_lower_is_better(metric: str) -> None:
    assert metric_direction(metric) == -1


@pytest.mark.parametrize(
    "metric",
    [
        "time/time_elapsed",
        "wall_time_seconds",
        "episodes",
        "trades_count",
        "time/fps",
        "train/learning_rate",
        "time/total_timesteps",
    ],
)
def test_times_counts_and_settings_have_no_direction(metric: str) -> None:
    assert metric_direction(metric) == 0
