"""Redis killed mid-run and started again: training finishes, the store has every point,
the live stream resumes for a subscriber that stayed on, and what was dropped is counted."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _live import collect

import mltrack
from mltrack_redis.protocol import LiveEvent

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mltrack_aim") is None, reason="needs mltrack-aim")

STEPS = 1000

TRAINER = """
    import json, sys, time
    import mltrack
    from mltrack.factory import health_sync

    import mltrack_redis.plugin

    mltrack_redis.plugin.MAX_BUFFERED_EVENTS = 20  # a small buffer, so a 3 s outage overflows it
    steps = int(sys.argv[1])
    run = mltrack.start_run("outage")
    print(run.id, flush=True)
    started = time.monotonic()
    for step in range(steps):
        run.log_metrics({"loss": 1.0 / (step + 1), "reward": step * 0.5}, step=step)
        run.progress(step + 1, steps)
        time.sleep(0.01)
    took = time.monotonic() - started
    run.finish()
    health = health_sync()
    print(json.dumps({"took": took, "redis": health.details["backends"]["redis"],
                      "writer": health.details["writer"]}), flush=True)
"""


def test_training_outlives_a_redis_restart_and_the_stream_resumes(tmp_path: Path, redis_server: Any) -> None:
    env = {
        **os.environ,
        "MLTRACK_REDIS_URL": redis_server.url,
        "ML_TRACKING_BACKEND": "aim",
        "AIM_REPO_PATH": str(tmp_path / "aim"),
    }
    trainer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRAINER), str(STEPS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: list[LiveEvent] = []
    try:
        assert trainer.stdout is not None
        run_id = trainer.stdout.readline().strip()
        assert run_id, trainer.stderr.read() if trainer.stderr else ""
        follower = threading.Thread(
            target=lambda: collect(redis_server.url, run=run_id, timeout=90, into=events), daemon=True
        )
        follower.start()
        # Kill only once the subscriber has read points: on a loaded machine it once started
        # after the kill, and a restarted Redis holds nothing from before the outage.
        deadline = time.monotonic() + 30
        while sum(len(e.points) for e in list(events)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        redis_server.kill()
        killed_at = time.monotonic()
        time.sleep(3)
        redis_server.start()
        restarted_at = time.monotonic()
        out, err = trainer.communicate(timeout=120)
        follower.join(60)
    finally:
        trainer.kill()
        trainer.wait()
    assert trainer.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    print("outage report:", json.dumps(report))
    assert killed_at < restarted_at

    # Training was not slowed: 1,000 steps of 10 ms sleep.
    assert report["took"] < STEPS * 0.01 * 1.5 + 2, report["took"]
    # The durable store has every point.
    repo = mltrack.open_repository("aim", repo_path=str(tmp_path / "aim"))
    history = repo.get_experiment_metrics_sync(run_id)
    assert len(history.series("loss")) == STEPS and len(history.series("reward")) == STEPS
    assert report["writer"]["points_undelivered"] == 0
    # Drops are counted; the publisher reconnected by itself.
    redis_report = report["redis"]
    assert redis_report["dropped_events"] > 0 and redis_report["dropped_points"] > 0
    assert redis_report["reconnects"] >= 1 and redis_report["connected"] is True
    # The subscriber that stayed on saw points before the outage, points after it, and the end.
    steps_seen = sorted({pt.step for e in events for pt in e.points})
    assert steps_seen and steps_seen[0] < 50
    assert steps_seen[-1] == STEPS - 1
    assert events[-1].type == "finished" and events[-1].data["status"] == "completed"
    gap = [b - a for a, b in itertools.pairwise(steps_seen) if b - a > 1]
    assert gap, "the outage should have cost the live stream some points"
