"""The pure mapping between mltrack's values and MLflow's (no store involved)."""

from __future__ import annotations

import math

import pytest

from mltrack.models import ExperimentStatus
from mltrack_mlflow import mapping as m


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [
        (ExperimentStatus.RUNNING, "RUNNING"),
        (ExperimentStatus.COMPLETED, "FINISHED"),
        (ExperimentStatus.FAILED, "FAILED"),
        (ExperimentStatus.INTERRUPTED, "KILLED"),
        (ExperimentStatus.CRASHED, "FAILED"),
    ],
)
def test_status_maps_both_ways(status: ExperimentStatus, mlflow_status: str) -> None:
    assert m.to_mlflow_status(status) == mlflow_status
    assert m.from_mlflow_status(mlflow_status, status.value) is status


def test_mlflow_statuses_without_mltrack_tag() -> None:
    assert m.from_mlflow_status("FINISHED", None) is ExperimentStatus.COMPLETED
    assert m.from_mlflow_status("KILLED", None) is ExperimentStatus.INTERRUPTED
    assert m.from_mlflow_status("SCHEDULED", None) is ExperimentStatus.RUNNING
    # a status changed in MLflow after mltrack tagged it: MLflow's word wins
    assert m.from_mlflow_status("FINISHED", "crashed") is ExperimentStatus.COMPLETED
    assert m.from_mlflow_status("FAILED", "bogus") is ExperimentStatus.FAILED


@pytest.mark.parametrize(
    "name",
    ["x" * 255, "a,b(c)", "../up", "/lead", "a//b", "trail/", ".", "loss{subset=val}", "损失?", "a b.c-d:e"],
)
def test_every_metric_name_gets_a_valid_key(name: str) -> None:
    key = m.metric_key(name, {})
    assert m.valid_key(key)
    assert key == name or m.valid_key(name) is False


def test_plain_names_are_their_own_keys_and_contexts_get_distinct_keys() -> None:
    assert m.metric_key("rollout/ep_rew_mean", {}) == "rollout/ep_rew_mean"
    val = m.metric_key("loss", {"subset": "val"})
    train = m.metric_key("loss", {"subset": "train"})
    assert val.startswith("loss:subset:val.") and train.startswith("loss:subset:train.")
    assert len({val, train, m.metric_key("loss", {})}) == 3
    assert m.metric_key("loss", {"subset": "val"}) == val  # deterministic


def test_tag_keys_are_valid_and_readable() -> None:
    assert m.tag_key("baseline") == "mltrack.tag.baseline"
    long = m.tag_key("t" * 255)
    odd = m.tag_key("a=b, c!")
    assert m.valid_key(long) and m.valid_key(odd) and long != odd


def test_flatten_params_dots_nested_keys_and_keeps_values_readable() -> None:
    config = {
        "lr": 0.0003,
        "opt": {"beta": 0.9, "inner": {"x": [1, 2]}},
        "empty": {},
        "flag": True,
        "none": None,
        "bad key!": "v",
        "long": "y" * 7000,
    }
    params = m.flatten_params(config)
    assert params["lr"] == "0.0003"
    assert params["opt.beta"] == "0.9"
    assert params["opt.inner.x"] == "[1, 2]"
    assert params["empty"] == "{}"
    assert params["flag"] == "True" and params["none"] == "None"
    assert len(params["long"]) == 6000 and params["long"].endswith("...")
    assert all(m.valid_key(k) for k in params)
    assert any(k.startswith("bad key_.") for k in params)


def test_long_json_values_split_over_tags_and_join_back() -> None:
    value = {"text": "é" * 20_000, "n": [1.5, None, True]}
    tags = m.split_json_tags(m.CONFIG_TAG, value)
    assert len(tags) == 4
    assert all(len(v) <= m.MAX_TAG_VALUE for v in tags.values())
    assert list(tags)[-1] == m.CONFIG_TAG  # the marker is written after its parts
    assert m.join_json_tags(m.CONFIG_TAG, tags) == value
    incomplete = {k: v for k, v in tags.items() if not k.endswith(".2")}
    assert m.join_json_tags(m.CONFIG_TAG, incomplete) is None


def test_infinities_stored_as_the_largest_float_read_back_as_infinities() -> None:
    assert m.from_mlflow_value(1.7976931348623157e308) == math.inf
    assert m.from_mlflow_value(-1.7976931348623157e308) == -math.inf
    assert m.from_mlflow_value(1.5) == 1.5


def test_last_per_step_keeps_the_last_write() -> None:
    steps, values, times = m.last_per_step([5, 1, 5, 3], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4])
    assert (steps, values, times) == ([1, 3, 5], [2.0, 4.0, 3.0], [0.2, 0.4, 0.3])


def test_params_mlflow_wrote_read_as_numbers_where_they_spell_one() -> None:
    assert m.parse_param("0.001") == 0.001
    assert m.parse_param("32") == 32
    assert m.parse_param("True") is True
    assert m.parse_param("None") is None
    assert m.parse_param("adam") == "adam"
    assert m.parse_param("nan") == "nan"
