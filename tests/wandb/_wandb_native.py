"""W&B's own reader of a run folder: ``wandb leet inspect`` (wandb-core, no server), as plain values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LEET_TIMEOUT = 60.0


def _leet(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=LEET_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def sync_dry_run(root: Path) -> str:
    """``wandb sync --dry-run`` in ``root``: what W&B would upload from ``root/wandb`` (no server asked)."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "sync", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=LEET_TIMEOUT,
        cwd=root,
        env={k: v for k, v in os.environ.items() if k != "WANDB_SILENT"},  # it would print nothing
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def leet_summary(folder: Path) -> Any:
    """``wandb leet inspect --summary --json <run folder>``: state, config, summary, tags, notes."""
    return json.loads(_leet("--summary", "--json", str(folder)))


def leet_records(folder: Path) -> list[dict[str, Any]]:
    """``wandb leet inspect --json <run folder>``: every record of the run's log, in order."""
    return [json.loads(line) for line in _leet("--json", str(folder)).splitlines() if line.strip()]


def leet_history(folder: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Each history key's points as W&B reads them: (step, value, ``_timestamp``), in log order."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for record in leet_records(folder):
        if record["type"] != "history":
            continue
        items = record["history"]["item"]
        step = int(record["history"].get("step", {}).get("num", items.get("_step", 0)))
        for key, value in items.items():
            if not key.startswith("_"):
                out.setdefault(key, []).append((step, float(value), float(items["_timestamp"])))
    return out


def last_per_step(points: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    """Points sorted by step, a step logged again keeping its last point (mltrack's read rule)."""
    kept = {step: (step, value, stamp) for step, value, stamp in points}
    return [kept[step] for step in sorted(kept)]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
