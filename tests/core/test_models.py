"""Validation and conversion at the boundary: what each kind of input becomes."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from mltrack import (
    ArtifactType,
    ExperimentStatus,
    ExperimentSummary,
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    ModelArtifact,
    TrainingMetrics,
)
from mltrack.models import to_metric_value, to_plain, to_step, validate_name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (True, 1.0),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7.0),
        (np.bool_(True), 1.0),
        (np.array(3.25), 3.25),
    ],
)
def test_numbers_of_every_kind_become_float(value: object, expected: float) -> None:
    got = to_metric_value("m", value)
    assert type(got) is float
    assert got == expected


def test_nan_and_inf_are_kept() -> None:
    assert math.isnan(to_metric_value("loss", float("nan")))
    assert to_metric_value("loss", np.float64("inf")) == math.inf


@pytest.mark.parametrize("value", ["1.5", None, [1.0], {"a": 1}, np.array([1.0, 2.0]), 1 + 2j, 10**400])
def test_non_numbers_raise_a_typed_error_naming_the_metric(value: object) -> None:
    with pytest.raises(InvalidMetricError, match="'reward'"):
        to_metric_value("reward", value)


def test_zero_dim_torch_tensor_becomes_float() -> None:
    torch = pytest.importorskip("torch")
    assert to_metric_value("m", torch.tensor(0.25)) == 0.25


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 256, "tab\there", None, 3])
def test_bad_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("name", ["loss", "rollout/ep_rew_mean", "损失", "x" * 255, "a b"])
def test_good_names_pass(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(("step", "expected"), [(0, 0), (10.0, 10), (np.int32(4), 4)])
def test_steps_accept_whole_numbers(step: object, expected: int) -> None:
    assert to_step(step) == expected


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, None])
def test_steps_reject_anything_else(step: object) -> None:
    with pytest.raises(InvalidStepError):
        to_step(step)


def test_training_metrics_takes_extra_named_metrics() -> None:
    m = TrainingMetrics(step=1000, loss=0.045, reward=1250.5, win_rate=0.68, trades_count=3)
    assert m.as_dict() == {"loss": 0.045, "reward": 1250.5, "win_rate": 0.68, "trades_count": 3.0}
    assert m.win_rate == 0.68
    with pytest.raises(AttributeError):
        _ = m.not_logged


def test_training_metrics_validates_values_and_steps() -> None:
    with pytest.raises(InvalidMetricError, match="sharpe_ratio"):
        TrainingMetrics(step=1, sharpe_ratio="high")
    with pytest.raises(InvalidStepError):
        TrainingMetrics(step=-5, loss=1.0)


def test_config_values_become_plain() -> None:
    cyclic: dict = {"a": 1}
    cyclic["self"] = cyclic
    plain = to_plain(
        {"lr": np.float32(0.5), "layers": (64, 64), "status": ExperimentStatus.COMPLETED, "c": cyclic}
    )
    assert plain["lr"] == 0.5
    assert type(plain["lr"]) is float
    assert plain["layers"] == [64, 64]
    assert plain["status"] == "completed"
    assert plain["c"]["self"] == "<cycle or too deep>"


def test_summary_duration_and_artifact_type_conversion() -> None:
    from datetime import datetime, timezone

    start = datetime(2024, 12, 1, tzinfo=timezone.utc)
    s = ExperimentSummary("exp_1", "PPO", "completed", start, end_time=start + timedelta(hours=2))
    assert s.status is ExperimentStatus.COMPLETED
    assert s.duration == timedelta(hours=2)
    a = ModelArtifact("best_model.zip", "model", "models/exp_123/best_model.zip", {"validation_score": 0.95})
    assert a.artifact_type is ArtifactType.MODEL


def test_steps_beyond_64_bits_are_rejected() -> None:
    from mltrack.models import MAX_STEP

    assert to_step(MAX_STEP) == MAX_STEP
    with pytest.raises(InvalidStepError, match="from 0 to"):
        to_step(2**63)


def test_ints_beyond_64_bits_in_configs_are_kept_as_strings() -> None:
    assert to_plain({"seed": 2**64, "small": 2**62}) == {"seed": str(2**64), "small": 2**62}


def test_unknown_status_and_non_mapping_config_are_typed_errors() -> None:
    from mltrack import ValidationError
    from mltrack.models import _to_config, to_status

    with pytest.raises(ValidationError, match="completed"):
        to_status("done")
    with pytest.raises(ValidationError, match="config must be a mapping"):
        _to_config([("lr", 0.1)])
