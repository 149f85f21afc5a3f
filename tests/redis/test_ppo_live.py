"""A real PPO run with ``TrackingCallback``, followed live by a subscriber in another process.

The subscriber (``mltrack.live.subscribe``) sees every point the durable store (Aim) ends up
with, the progress in timesteps and each phase (rollout, train, eval, checkpoint), and the final
status, in the order they happened.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mltrack

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mltrack_aim") is None or importlib.util.find_spec("mltrack_sb3") is None,
    reason="needs mltrack-aim and mltrack-sb3",
)

TOTAL = 1024

SUBSCRIBER = """
    import asyncio, json, sys
    import mltrack.live

    async def main():
        async for event in mltrack.live.subscribe(experiment=sys.argv[1]):
            print(json.dumps({"type": event.type, "run": event.run_id, "data": event.data}), flush=True)
            if event.is_final:
                return

    asyncio.run(main())
"""

TRAINER = f"""
    import sys, torch
    from stable_baselines3 import PPO
    from mltrack_sb3 import TrackingCallback

    torch.set_num_threads(1)
    callback = TrackingCallback(sys.argv[1], eval_freq=512, save_freq=512, n_eval_episodes=2)
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps={TOTAL}, callback=callback)
    print(callback.run_id, flush=True)
"""


def test_a_ppo_run_is_followed_live_by_another_process(tmp_path: Path, redis_server: Any) -> None:
    env = {
        **os.environ,
        "MLTRACK_REDIS_URL": redis_server.url,
        "ML_TRACKING_BACKEND": "aim",
        "AIM_REPO_PATH": str(tmp_path / "aim"),
    }
    subscriber = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SUBSCRIBER), "ppo-live"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        trainer = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(TRAINER), "ppo-live"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert trainer.returncode == 0, trainer.stderr[-3000:]
        run_id = trainer.stdout.strip().splitlines()[-1]
        out, _ = subscriber.communicate(timeout=60)
    finally:
        subscriber.kill()
        subscriber.wait()
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["run"] for e in events} == {run_id}
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[-1]["data"]["status"] == "completed"

    # Every point the store holds, the subscriber saw live.
    seen = {
        (series["name"], step, value)
        for e in events
        if e["type"] == "metrics"
        for series in e["data"]["series"]
        for step, value in zip(series["steps"], series["values"])
    }
    repo = mltrack.open_repository("aim", repo_path=str(tmp_path / "aim"))
    stored = {(pt.name, pt.step, pt.value) for pt in repo.get_experiment_metrics_sync(run_id)}
    assert stored and seen == stored
    dumps = {s for n, s, _v in stored if n == "time/fps"}
    assert len(dumps) == TOTAL // 128  # one dump per PPO iteration, each seen

    # Progress and phases, in order with the metrics: a point after progress P is at a step >= P.
    states = [e["data"] for e in events if e["type"] == "state"]
    phases = [s["phase"] for s in states if "phase" in s]
    assert {"rollout", "train", "eval", "checkpoint"} <= set(phases)
    done = [s["progress_done"] for s in states if "progress_done" in s]
    assert done == sorted(done) and done[-1] == TOTAL
    assert all(s["progress_total"] == TOTAL for s in states if "progress_total" in s)
    progress = 0
    for event in events:
        if event["type"] == "state" and "progress_done" in event["data"]:
            progress = event["data"]["progress_done"]
        elif event["type"] == "metrics":
            assert all(step >= progress for series in event["data"]["series"] for step in series["steps"])
