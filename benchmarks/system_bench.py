"""System metrics (mltrack-system): what sampling costs the training loop.

Fresh training processes logging to a real Aim repository (mltrack's writer process, as by
default), the sampler on at ``MLTRACK_SYSTEM_INTERVAL=0.1`` (100x the default rate) or off,
interleaved, medians:

* ``log_metric`` in a hot loop (nothing else per step): microseconds per call;
* a paced loop (~1 ms of pure-Python work per step, five metrics logged): wall time per step,
  the overhead a training loop sees, in percent;
* with ``--ppo``: SB3 PPO on CartPole with ``TrackingCallback``, sampler on at 1 s (10x the
  default rate) or off: environment steps per second of ``learn()``.

Alone: ``python benchmarks/system_bench.py [--quick] [--ppo]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["bench_ppo", "bench_system", "main"]

TRAINER = textwrap.dedent(
    """
    import json, time
    import mltrack
    from mltrack.factory import health_sync

    def work():
        return sum(i * i for i in range(20000))  # ~1 ms of CPU on this machine

    with mltrack.start_run("system-bench") as run:
        time.sleep(0.5)  # the run's start (hooks, the store) is not what is measured
        n = HOT
        started = time.perf_counter()
        for step in range(n):
            run.log_metric("loss", 0.5, step=step)
        hot_us = (time.perf_counter() - started) / n * 1e6
        steps = PACED
        started = time.perf_counter()
        for step in range(steps):
            work()
            run.log_metrics({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}, step=step)
        paced_ms = (time.perf_counter() - started) / steps * 1e3
    system = health_sync().details["backends"].get("system", {})
    print(json.dumps({"hot_us": hot_us, "paced_ms": paced_ms, "samples": system.get("samples", 0),
                      "sample_ms": system.get("sample_ms"),
                      "sample_cpu_ms": system.get("sample_cpu_ms")}))
    """
)


PPO_TRAINER = textwrap.dedent(
    """
    import json, time
    from stable_baselines3 import PPO
    from mltrack_sb3 import TrackingCallback

    model = PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    callback = TrackingCallback("system-bench-ppo")
    started = time.perf_counter()
    model.learn(TIMESTEPS, callback=callback)
    took = time.perf_counter() - started
    print(json.dumps({"steps_per_s": model.num_timesteps / took}))
    """
)


def bench_ppo(quick: bool = False) -> dict[str, Any]:
    """PPO steps/s with the sampler on (1 s interval) and off, interleaved; medians and the cost."""
    from mltrack_aim.store import ensure_repo

    rounds, timesteps = (2, 4_096) if quick else (5, 16_384)
    root = Path(tempfile.mkdtemp(prefix="system-bench-ppo-"))
    found: dict[str, list[float]] = {"off": [], "on": []}
    try:
        ensure_repo(str(root))
        for i in range(rounds):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                env = {
                    **os.environ,
                    "ML_TRACKING_BACKEND": "aim",
                    "ML_STORAGE_PATH": str(root),
                    "MLTRACK_SYSTEM_METRICS": "1" if mode == "on" else "0",
                    "MLTRACK_SYSTEM_INTERVAL": "1",
                }
                code = PPO_TRAINER.replace("TIMESTEPS", str(timesteps))
                out = subprocess.run(
                    [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
                )
                found[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    off, on = statistics.median(found["off"]), statistics.median(found["on"])
    return {"off": off, "on": on, "cost_percent": 100 * (1 - on / off), "rounds": found}


def _child(store: Path, on: bool, hot: int, paced: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "ML_TRACKING_BACKEND": "aim",
        "ML_STORAGE_PATH": str(store),
        "MLTRACK_SYSTEM_METRICS": "1" if on else "0",
        "MLTRACK_SYSTEM_INTERVAL": "0.1",
    }
    code = TRAINER.replace("HOT", str(hot)).replace("PACED", str(paced))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_system(quick: bool = False) -> dict[str, Any]:
    """Run the comparison; returns medians per mode and the overhead in percent."""
    from mltrack_aim.store import ensure_repo

    rounds, hot, paced = (2, 300_000, 1_000) if quick else (4, 1_000_000, 2_000)
    root = Path(tempfile.mkdtemp(prefix="system-bench-"))
    try:
        ensure_repo(str(root))
        results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for _ in range(rounds):
            for mode in ("off", "on"):
                results[mode].append(_child(root, mode == "on", hot, paced))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {}
    for mode, runs in results.items():
        summary[mode] = {
            "hot_us": statistics.median(r["hot_us"] for r in runs),
            "paced_ms": statistics.median(r["paced_ms"] for r in runs),
            "samples": statistics.median(r["samples"] for r in runs),
            "sample_ms": statistics.median(r["sample_ms"] or 0.0 for r in runs),
            "sample_cpu_ms": statistics.median(r["sample_cpu_ms"] or 0.0 for r in runs),
            "rounds": [(round(r["hot_us"], 2), round(r["paced_ms"], 3)) for r in runs],
        }
    off, on = summary["off"], summary["on"]
    summary["hot_overhead_percent"] = 100 * (on["hot_us"] / off["hot_us"] - 1)
    summary["paced_overhead_percent"] = 100 * (on["paced_ms"] / off["paced_ms"] - 1)
    # The sampler's own CPU per sample over the interval: the share of one core it takes.
    summary["cpu_share_percent_at_0.1s"] = on["sample_cpu_ms"] / 100 * 100
    summary["cpu_share_percent_at_10s"] = on["sample_cpu_ms"] / 10_000 * 100
    return summary


def main() -> None:
    """Print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--ppo", action="store_true", help="PPO on CartPole with the sampler on and off")
    args = parser.parse_args()
    if args.ppo:
        p = bench_ppo(args.quick)
        print(f"PPO CartPole steps/s, sampler off: {p['off']:,.0f}, on at 1 s: {p['on']:,.0f}")
        print(f"rounds: {p['rounds']}")
        print(f"cost of system metrics on PPO: {p['cost_percent']:+.2f}% (at 10x the default rate)")
        return
    s = bench_system(args.quick)
    head = f"{'mode':<5} {'log_metric us/call':>19} {'paced ms/step':>14} {'samples':>8} {'ms/sample':>10}"
    print(head + f" {'cpu ms/sample':>14}")
    for mode in ("off", "on"):
        m = s[mode]
        print(
            f"{mode:<5} {m['hot_us']:>19.2f} {m['paced_ms']:>14.3f} {m['samples']:>8.0f}"
            f" {m['sample_ms']:>10.3f} {m['sample_cpu_ms']:>14.3f}"
        )
    for mode in ("off", "on"):
        print(f"{mode} rounds (us/call, ms/step): {s[mode]['rounds']}")
    print(
        f"overhead at a 0.1 s interval: hot loop {s['hot_overhead_percent']:+.1f}%, "
        f"paced loop {s['paced_overhead_percent']:+.1f}%"
    )
    print(
        f"sampler CPU: {s['cpu_share_percent_at_0.1s']:.2f}% of a core at 0.1 s, "
        f"{s['cpu_share_percent_at_10s']:.4f}% at the default 10 s"
    )


if __name__ == "__main__":
    main()
