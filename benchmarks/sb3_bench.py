"""How much tracking costs SB3 training: PPO on CartPole, untracked vs tracked, as a markdown table.

    python benchmarks/sb3_bench.py [--timesteps 20000] [--rounds 3]

Variants run interleaved (round-robin, so machine noise hits all of them alike) with torch
pinned to one thread, each in a fresh model and a fresh Aim repository under a temp dir:

* ``baseline``: no callback;
* ``TrackingCallback``: mltrack-sb3 with its defaults (no evaluation, no checkpoints);
* ``mltrack per step``: a callback logging one value through mltrack on every env step;
* ``aim.sb3.AimCallback``: Aim's own callback, ``log_system_params=False``.

Goals (issue 4): TrackingCallback >= 0.97x baseline, per-step logging >= 0.95x,
``import mltrack_sb3`` < 0.3 s over ``import stable_baselines3``, run start and finish < 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import mltrack
from mltrack.factory import start_run
from mltrack.tracker import ActiveRun
from mltrack_sb3 import TrackingCallback


class LogEveryStep(BaseCallback):
    """Logs one value through mltrack on every env step (the heaviest reasonable use)."""

    def __init__(self, run: ActiveRun) -> None:
        super().__init__()
        self.run = run

    def _on_step(self) -> bool:
        self.run.log_metric("reward_per_step", float(self.locals["rewards"][0]), step=self.num_timesteps)
        return True


def _model() -> PPO:
    return PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu")


def _timed(learn: Callable[[PPO], None]) -> float:
    model = _model()
    started = time.perf_counter()
    learn(model)
    return time.perf_counter() - started


def _variants(timesteps: int, workdir: Path) -> dict[str, Callable[[], float]]:
    def baseline() -> float:
        return _timed(lambda m: m.learn(timesteps))

    def tracking() -> float:
        callback = TrackingCallback("bench", best_model_save_path=workdir / "models")
        return _timed(lambda m: m.learn(timesteps, callback=callback))

    def per_step() -> float:
        def learn(model: PPO) -> None:
            with start_run("bench-per-step") as run:
                model.learn(timesteps, callback=LogEveryStep(run))

        return _timed(learn)

    def aim_callback() -> float:
        from aim.sb3 import AimCallback

        callback = AimCallback(
            repo=str(workdir / "aim_native"), experiment_name="bench", log_system_params=False
        )
        elapsed = _timed(lambda m: m.learn(timesteps, callback=callback))
        callback._run.close()  # type: ignore[attr-defined]  # otherwise closed only when collected
        return elapsed

    return {
        "baseline (no callback)": baseline,
        "TrackingCallback": tracking,
        "mltrack per step": per_step,
        "aim.sb3.AimCallback": aim_callback,
    }


def _import_seconds(code: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _run_overhead(repeats: int = 20) -> tuple[float, float]:
    start_run("warm-up").finish()  # the backend is built once per process, outside the loop
    starts, finishes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run = start_run("bench-overhead", {"lr": 0.001})
        t1 = time.perf_counter()
        run.log_metric("x", 1.0, step=0)
        t2 = time.perf_counter()
        run.finish()
        t3 = time.perf_counter()
        starts.append(t1 - t0)
        finishes.append(t3 - t2)
    return statistics.median(starts), statistics.median(finishes)


def main() -> None:
    """Run every measurement and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="mltrack-sb3-bench-"))
    mltrack.configure_backend("aim", storage_path=str(workdir / "aim_logs"))

    variants = _variants(args.timesteps, workdir)
    results: dict[str, list[float]] = {name: [] for name in variants}
    errors: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, run in variants.items():
            if name in errors:
                continue
            try:
                results[name].append(args.timesteps / run())
            except Exception as exc:  # e.g. AimCallback's known crashes: report, do not abort
                errors[name] = f"{type(exc).__name__}: {exc}"

    base = statistics.median(results["baseline (no callback)"])
    goals: dict[str, Any] = {"TrackingCallback": 0.97, "mltrack per step": 0.95}
    print(
        f"## PPO CartPole-v1, {args.timesteps} timesteps, {args.rounds} interleaved rounds, 1 torch thread\n"
    )
    print("| variant | steps/s (median) | ratio to baseline | goal |")
    print("|---|---:|---:|---|")
    for name, samples in results.items():
        if name in errors:
            print(f"| {name} | failed: {errors[name][:80]} | | |")
            continue
        rate = statistics.median(samples)
        goal = goals.get(name)
        verdict = "" if goal is None else f">= {goal:.2f}x {'ok' if rate / base >= goal else 'MISSED'}"
        print(f"| {name} | {rate:,.0f} | {rate / base:.3f}x | {verdict} |")

    sb3 = _import_seconds("import stable_baselines3")
    ours = _import_seconds("import stable_baselines3, mltrack_sb3; mltrack_sb3.TrackingCallback")
    start, finish = _run_overhead()
    print("\n| cost | measured | goal |")
    print("|---|---:|---|")
    print(f"| `import mltrack_sb3` over `import stable_baselines3` | {ours - sb3:+.3f} s | < 0.3 s |")
    print(f"| start a run (median) | {start * 1000:.1f} ms | < 50 ms |")
    print(f"| finish a run (median) | {finish * 1000:.1f} ms | < 50 ms |")


if __name__ == "__main__":
    main()
