"""Reading MLflow runs back as mltrack's: names of encoded keys, descriptions, histories, files.

Pure helpers over what MLflow's store returns; the backend's read hooks combine them.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mltrack.models import final_metric_key
from mltrack_mlflow import mapping as m

__all__ = ["description", "key_names", "latest", "read_history", "sha256", "user", "utc", "walk"]


def utc(ms: int | None) -> datetime | None:
    """MLflow's epoch milliseconds as a UTC datetime."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, timezone.utc)


def description(tags: Mapping[str, str]) -> str | None:
    """The run's description: the whole one if MLflow's note had to be cut, else the note."""
    whole = m.join_json_tags(m.LONG_DESCRIPTION_TAG, tags)
    return whole if isinstance(whole, str) else tags.get(m.DESCRIPTION_TAG)


def key_names(tags: Mapping[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Encoded MLflow metric keys -> (mltrack name, context), from the ``mltrack.metric.*`` tags."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, value in tags.items():
        if not key.startswith(m.METRIC_PREFIX):
            continue
        try:
            info = json.loads(value)
        except ValueError:
            continue
        if isinstance(info, dict) and isinstance(info.get("key"), str) and isinstance(info.get("name"), str):
            context = info.get("context")
            out[info["key"]] = (info["name"], context if isinstance(context, dict) else {})
    return out


def latest(run: Any) -> dict[str, float]:
    """MLflow's latest value of each metric, named as mltrack names final metrics."""
    names = key_names(run.data.tags)
    out: dict[str, float] = {}
    for key, value in run.data.metrics.items():
        name, context = names.get(key, (key, {}))
        out[final_metric_key(name, tuple(sorted(context.items())))] = m.from_mlflow_value(float(value))
    return out


def read_history(store: Any, mlflow_id: str, key: str) -> tuple[list[int], list[float], list[float]]:
    """One metric's history through the store's API (servers and non-SQLite databases)."""
    points: list[Any] = []
    token = None
    while True:
        page = store.get_metric_history(mlflow_id, key, page_token=token)
        points.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    points.sort(key=lambda p: (p.step, p.timestamp))  # stable: equal times keep the store's order
    steps = [int(p.step) for p in points]
    values = [math.nan if math.isnan(p.value) else m.from_mlflow_value(float(p.value)) for p in points]
    times = [p.timestamp / 1000.0 for p in points]
    return m.last_per_step(steps, values, times)


def walk(repo: Any, path: str | None = None) -> list[str]:
    """Every file path in an MLflow artifact repository, recursively."""
    out: list[str] = []
    for entry in repo.list_artifacts(path):
        if entry.is_dir:
            out.extend(walk(repo, entry.path))
        else:
            out.append(entry.path)
    return out


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def user() -> str:
    """The user name MLflow would record, or ``unknown``."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
