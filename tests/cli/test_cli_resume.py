"""``mltrack show`` says how many times a run was resumed (text and ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import mltrack
import mltrack.factory

from _cli_helpers import run_mltrack


def test_show_says_how_many_times_a_run_was_resumed(tmp_path: Path) -> None:
    mltrack.configure_backend("tensorboard", storage_path=str(tmp_path))
    try:
        with mltrack.start_run("cli-resume") as run:
            run.log_metric("loss", 1.0)
        with mltrack.start_run(resume=run.id) as again:
            again.log_metric("loss", 0.5)
    finally:
        mltrack.factory.reset()
        mltrack.reset_configuration()
    env = {"ML_TRACKING_BACKEND": "tensorboard", "ML_STORAGE_PATH": str(tmp_path)}
    shown = run_mltrack("show", run.id[:10], **env)
    assert shown.returncode == 0, shown.stderr
    assert "status: completed   resumed: 1x" in shown.stdout
    as_json = run_mltrack("show", run.id, "--json", **env)
    assert as_json.returncode == 0, as_json.stderr
    got = json.loads(as_json.stdout)
    assert got["resumed"] == 1 and "mltrack:resumed=1" in got["tags"]
