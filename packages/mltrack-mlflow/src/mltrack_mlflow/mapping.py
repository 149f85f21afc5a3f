"""How mltrack's values become MLflow's and back: pure functions, no MLflow import.

MLflow's keys (metric, param and tag names) allow only letters, digits, ``_ - . / :`` and
spaces, at most 250 characters, and must not look like a path that normalizes to another
one. mltrack's names are any printable text up to 255 characters, metrics carry a context,
configs nest. Everything here maps one way exactly and, where MLflow's form loses
information, stores what is needed to read it back identically.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mltrack.models import ExperimentStatus

__all__ = [
    "CONFIG_TAG",
    "DESCRIPTION_TAG",
    "FINAL_METRICS_TAG",
    "RUN_ID_TAG",
    "STATUS_TAG",
    "TAG_PREFIX",
    "WRITER_TAG",
    "artifact_tag_key",
    "flatten_params",
    "from_mlflow_status",
    "from_mlflow_value",
    "join_json_tags",
    "metric_key",
    "param_value",
    "parse_param",
    "split_json_tags",
    "tag_key",
    "to_mlflow_status",
    "valid_key",
]

PREFIX = "mltrack."
RUN_ID_TAG = "mltrack.run_id"
"""The mltrack run id (24 hex characters); MLflow chooses its own run ids."""
CONFIG_TAG = "mltrack.config"
"""The exact nested config as JSON (split over ``mltrack.config.1``, ... when long)."""
FINAL_METRICS_TAG = "mltrack.final_metrics"
STATUS_TAG = "mltrack.status"
"""mltrack's status, for the two statuses MLflow has no word for (CRASHED and INTERRUPTED)."""
WRITER_TAG = "mltrack.writer"
"""``host pid start-ticks`` of the process writing the run, to tell a crashed writer."""
TAG_PREFIX = "mltrack.tag."
"""Each mltrack tag is the MLflow tag ``mltrack.tag.<name>`` whose value is the exact name."""
METRIC_PREFIX = "mltrack.metric."
"""Maps an MLflow metric key that is not the plain metric name back to name and context."""
ARTIFACT_PREFIX = "mltrack.artifact."
"""Type, size, sha256 and metadata of one artifact, as JSON."""
DESCRIPTION_TAG = "mlflow.note.content"
"""MLflow's own run description (shown by its UI)."""
LONG_DESCRIPTION_TAG = "mltrack.description"
"""A description longer than an MLflow tag holds, whole (``mlflow.note.content`` has its start)."""
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""What MLflow's UI calls experiments of model training runs (set on experiments mltrack creates)."""

MAX_KEY = 250
MAX_TAG_VALUE = 8000
MAX_PARAM_VALUE = 6000
PARTS_MARKER = "mltrack-parts:"
"""A long JSON value is stored as ``mltrack-parts:N`` under its key and N parts beside it."""

_KEY_CHARS = re.compile(r"^[/\w.\- :]*$")
_BAD_CHAR = re.compile(r"[^/\w.\- :]")
FLOAT_MAX = sys.float_info.max

# --- statuses -------------------------------------------------------------------------------

_TO_MLFLOW = {
    ExperimentStatus.RUNNING: "RUNNING",
    ExperimentStatus.COMPLETED: "FINISHED",
    ExperimentStatus.FAILED: "FAILED",
    ExperimentStatus.INTERRUPTED: "KILLED",
    ExperimentStatus.CRASHED: "FAILED",
}
_FROM_MLFLOW = {
    "RUNNING": ExperimentStatus.RUNNING,
    "SCHEDULED": ExperimentStatus.RUNNING,
    "FINISHED": ExperimentStatus.COMPLETED,
    "FAILED": ExperimentStatus.FAILED,
    "KILLED": ExperimentStatus.INTERRUPTED,
}


def to_mlflow_status(status: ExperimentStatus) -> str:
    """MLflow's RunStatus name for an mltrack status (CRASHED is FAILED plus ``mltrack.status``)."""
    return _TO_MLFLOW[ExperimentStatus(status)]


def from_mlflow_status(mlflow_status: str, mltrack_status: str | None) -> ExperimentStatus:
    """mltrack's status of a run: its ``mltrack.status`` tag when MLflow's status still agrees."""
    if mltrack_status:
        try:
            tagged = ExperimentStatus(mltrack_status)
        except ValueError:
            tagged = None
        if tagged is not None and _TO_MLFLOW[tagged] == mlflow_status:
            return tagged
    return _FROM_MLFLOW.get(mlflow_status, ExperimentStatus.RUNNING)


# --- keys -----------------------------------------------------------------------------------


def valid_key(key: str) -> bool:
    """True if MLflow accepts ``key`` as a metric, param or tag name unchanged."""
    if not key or len(key) > MAX_KEY or not _KEY_CHARS.match(key):
        return False
    norm = posixpath.normpath(key)
    return norm == key and norm != "." and not norm.startswith(("..", "/"))


def _digest(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def _sanitize(text: str) -> str:
    """``text`` with every character MLflow refuses replaced by ``_`` and path oddities removed."""
    cleaned = _BAD_CHAR.sub("_", text)
    parts = [p if p not in (".", "..") else p.replace(".", "_") for p in cleaned.split("/")]
    cleaned = "/".join(p for p in parts if p) or "_"
    return cleaned


def encoded_key(readable: str, identity: object, room: int = MAX_KEY) -> str:
    """A valid key that starts like ``readable`` and ends with a digest of ``identity``."""
    suffix = "." + _digest(identity)
    base = _sanitize(readable)[: room - len(suffix)].rstrip("/")
    key = (base or "_") + suffix
    return key if valid_key(key) else "_" + suffix


def metric_key(name: str, context: Mapping[str, Any]) -> str:
    """The MLflow metric key of mltrack metric ``name`` in ``context``.

    A name MLflow accepts, without context, is its own key (``rollout/ep_rew_mean``). Any
    other gets a readable key plus a digest (``loss:subset:val.3f2a9c01d4``), and the
    ``mltrack.metric.*`` tag of :func:`metric_mapping_tag` says what it stands for.
    """
    if not context and valid_key(name):
        return name
    readable = name + "".join(f":{k}:{v}" for k, v in sorted(context.items()))
    return encoded_key(readable, [name, sorted(context.items())])


def metric_mapping_tag(key: str) -> str:
    """The tag holding ``{"name": ..., "context": ...}`` of an encoded metric key."""
    return METRIC_PREFIX + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def tag_key(tag: str) -> str:
    """The MLflow tag key of mltrack tag ``tag`` (its value is ``tag`` itself)."""
    key = TAG_PREFIX + tag
    if valid_key(key):
        return key
    return TAG_PREFIX + encoded_key(tag, tag, MAX_KEY - len(TAG_PREFIX))


def artifact_tag_key(name: str) -> str:
    """The MLflow tag key holding the metadata of artifact ``name``."""
    return ARTIFACT_PREFIX + hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


# --- params ---------------------------------------------------------------------------------


def param_value(value: Any) -> str:
    """How a config leaf is shown as an MLflow param: ``str()`` of scalars, JSON of lists."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE:
        text = text[: MAX_PARAM_VALUE - 3] + "..."
    return text


def _flat_items(config: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flat_items(value, path + ".")
        else:
            yield path, value


def flatten_params(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params of a nested config: dotted keys (``opt.beta``), string values.

    Keys MLflow refuses are made valid (readable part plus a digest); the exact config is
    kept beside them in the ``mltrack.config`` tag, so nothing here has to read back.
    """
    out: dict[str, str] = {}
    for path, value in _flat_items(config, ""):
        key = path if valid_key(path) else encoded_key(path, path)
        out.setdefault(key, param_value(value))
    return out


def parse_param(text: str) -> Any:
    """A param MLflow itself wrote, as the number, bool or None it spells, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


# --- long JSON values in tags ---------------------------------------------------------------


def split_json_tags(key: str, value: Any) -> dict[str, str]:
    """Tags holding ``value`` as JSON under ``key``, split in parts when over MLflow's 8000 chars."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= MAX_TAG_VALUE:
        return {key: text}
    parts = [text[i : i + MAX_TAG_VALUE] for i in range(0, len(text), MAX_TAG_VALUE)]
    tags = {f"{key}.{i + 1}": part for i, part in enumerate(parts)}
    tags[key] = f"{PARTS_MARKER}{len(parts)}"  # written last: readers see whole parts or the old value
    return tags


def join_json_tags(key: str, tags: Mapping[str, str]) -> Any:
    """The value :func:`split_json_tags` stored under ``key``, or None if missing or incomplete."""
    head = tags.get(key)
    if head is None:
        return None
    if head.startswith(PARTS_MARKER):
        try:
            count = int(head[len(PARTS_MARKER) :])
        except ValueError:
            return None
        parts = [tags.get(f"{key}.{i + 1}") for i in range(count)]
        if any(p is None for p in parts):
            return None
        head = "".join(p for p in parts if p is not None)
    try:
        return json.loads(head)
    except ValueError:
        return None


# --- values ---------------------------------------------------------------------------------


def from_mlflow_value(value: float) -> float:
    """MLflow's SQL stores keep infinities as the largest float: read those back as infinities."""
    if value >= FLOAT_MAX:
        return math.inf
    if value <= -FLOAT_MAX:
        return -math.inf
    return value


def last_per_step(
    steps: Sequence[int], values: Sequence[float], timestamps: Sequence[float]
) -> tuple[list[int], list[float], list[float]]:
    """Columns sorted by step keeping, per step, the last point in the given order."""
    latest: dict[int, int] = {}
    for i, step in enumerate(steps):
        latest[step] = i
    if len(latest) == len(steps) and all(steps[i] < steps[i + 1] for i in range(len(steps) - 1)):
        return list(steps), list(values), list(timestamps)
    order = sorted(latest)
    return (
        order,
        [values[latest[s]] for s in order],
        [timestamps[latest[s]] for s in order],
    )
