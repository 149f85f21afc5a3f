"""Train PPO on CartPole-v1 with two learning rates, track both runs, compare them.

    python examples/train_ppo_cartpole.py            # into ./aim_logs (or $ML_STORAGE_PATH)
    python examples/train_ppo_cartpole.py --timesteps 5000   # a quicker look

Each run is tracked by ``TrackingCallback``: hyperparameters, every value SB3 logs, each
episode, an evaluation every ``--eval-freq`` steps, the best and final models. At the end
the two runs are compared from what the store recorded, and the command that opens the Aim
UI on them is printed. Takes under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import mltrack
from mltrack.factory import experiment_repository
from mltrack_sb3 import TrackingCallback

EXPERIMENT = "PPO_CartPole"
LEARNING_RATES = (3e-4, 1e-3)
COMPARED = ["eval/best_mean_reward", "eval/mean_reward", "rollout/ep_rew_mean"]


def train(learning_rate: float, timesteps: int, eval_freq: int, models_dir: Path) -> str:
    """Train one PPO agent with ``learning_rate``; return the id of its run."""
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=learning_rate,
        n_steps=128,
        batch_size=128,
        n_epochs=4,
        gae_lambda=0.9,
        gamma=0.98,
        seed=0,
    )
    callback = TrackingCallback(
        experiment_name=EXPERIMENT,
        config={"purpose": "learning-rate comparison"},
        eval_freq=eval_freq,
        n_eval_episodes=5,
        run_name=f"ppo-lr-{learning_rate:g}",
        best_model_save_path=models_dir / f"lr-{learning_rate:g}",
    )
    started = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=callback)
    took = time.perf_counter() - started
    print(
        f"lr={learning_rate:g}: {timesteps} steps in {took:.0f} s, best eval reward "
        f"{callback.best_mean_reward:.1f}, best model at {callback.best_model_path}"
    )
    assert callback.run_id is not None, "tracking failed: see the warning above and `mltrack health`"
    return callback.run_id


def main() -> None:
    """Train twice, then print the comparison and how to open the UI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=60_000)
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--storage", default=os.environ.get("ML_STORAGE_PATH", "./aim_logs"))
    args = parser.parse_args()

    storage = Path(args.storage).resolve()
    if os.environ.get("ML_TRACKING_BACKEND", "aim") == "aim":
        mltrack.configure_backend("aim", storage_path=str(storage))
    torch.set_num_threads(1)  # small networks: one thread is fastest, and leaves a core to the store

    run_ids = [train(lr, args.timesteps, args.eval_freq, storage.parent / "models") for lr in LEARNING_RATES]

    comparison = experiment_repository().compare_experiments_sync(run_ids, metrics=COMPARED)
    names = {run.experiment_id: run.name for run in comparison.runs}
    print(f"\nComparison of {len(run_ids)} runs of {EXPERIMENT}:")
    print("  hyperparameters that differ:")
    for param, values in comparison.differing_params.items():
        shown = ", ".join(f"{names[rid]}={value}" for rid, value in values.items())
        print(f"    {param}: {shown}")
    print("  final metrics:")
    width = max(len(name) for name in names.values())
    print(f"    {'run':<{width}}  " + "  ".join(f"{m:>22}" for m in COMPARED))
    for rid, finals in comparison.final_metrics.items():
        cells = "  ".join(f"{finals.get(m, float('nan')):>22.1f}" for m in COMPARED)
        print(f"    {names[rid]:<{width}}  {cells}")
    best = comparison.best.get("eval/best_mean_reward")
    if best is not None:
        print(f"  best run: {names[best]} ({best})")
    elif "eval/best_mean_reward" in comparison.ties:  # both solved CartPole: no single best
        tied = ", ".join(names[rid] for rid in comparison.ties["eval/best_mean_reward"])
        print(f"  best run: a tie between {tied}")
    _print_ui_hint(storage)


def _print_ui_hint(storage: Path) -> None:
    """How to open the UI, with commands that work from this shell as they are printed.

    ``nox -s demo`` installs aim and mltrack into its own environment (``.nox/demo``), which
    is not on the user's PATH: name the commands by their full path unless PATH finds them.
    """
    bin_dir = Path(sys.executable).parent

    def command(name: str) -> str:
        found = shutil.which(name)
        if found and Path(found).resolve().parent == bin_dir.resolve():
            return name
        return str(bin_dir / name)

    print("\nOpen the Aim UI on these runs with:")
    print(f"  {command('aim')} up --repo {storage}")
    print(f"  (or: ML_TRACKING_BACKEND=aim ML_STORAGE_PATH={storage} {command('mltrack')} ui)")
    if command("mltrack") != "mltrack":
        print(f"Put the demo's commands on your PATH with: source {bin_dir / 'activate'}")


if __name__ == "__main__":
    main()
