"""Tune PPO on CartPole-v1 with Optuna: 3 worker processes share one study on the cluster.

    mltrack cluster up &                      # or on the tracking machine: nox -s cluster
    eval "$(mltrack cluster env)"             # ML_TRACKING_BACKEND, MLFLOW_TRACKING_URI, OPTUNA_STORAGE
    python examples/sweep_ppo.py              # 3 workers, 6 trials, 4,000 steps each

    python examples/sweep_ppo.py --start-cluster   # the same, with a cluster of its own for the sweep

Each worker is what would run on a machine of its own: it loads the study from Optuna's
RDBStorage on the cluster's PostgreSQL (``OPTUNA_STORAGE``) and tracks into its MLflow server
(``MLFLOW_TRACKING_URI``) through mltrack-optuna: a parent run for the study, a run per trial
opened when the trial starts, the evaluation reward reported every ``--eval-every`` steps
(live, as the trial's ``value``), poor trials pruned (INTERRUPTED, tag ``optuna:pruned``).
At the end the best trials are compared with ``mltrack compare``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = "ppo-cartpole-sweep"


def objective(trial: object, timesteps: int, eval_every: int) -> float:
    """Train PPO with the trial's hyperparameters; report the mean evaluation reward as it goes."""
    import optuna
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    import mltrack_optuna

    assert isinstance(trial, optuna.Trial)
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "n_steps": trial.suggest_categorical("n_steps", [64, 128, 256]),
        "gamma": trial.suggest_float("gamma", 0.95, 0.999),
        "ent_coef": trial.suggest_float("ent_coef", 1e-5, 1e-2, log=True),
    }
    env = make_vec_env("CartPole-v1", n_envs=4, seed=trial.number)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1000 + trial.number)
    model = PPO("MlpPolicy", env, batch_size=64, n_epochs=4, seed=trial.number, device="cpu", **params)
    run = mltrack_optuna.trial_run(trial)  # the trial's own run: log anything else into it
    best = 0.0
    for done in range(eval_every, timesteps + 1, eval_every):
        model.learn(total_timesteps=eval_every, reset_num_timesteps=False)
        mean_reward, std_reward = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
        best = max(best, float(mean_reward))
        run.log_metrics({"eval/mean_reward": mean_reward, "eval/std_reward": std_reward}, step=done)
        trial.report(float(mean_reward), done)
        if trial.should_prune():
            raise optuna.TrialPruned()
    run.log_metric("eval/best_mean_reward", best, step=timesteps)
    return best


def worker(study_name: str, storage: str, trials: int, timesteps: int, eval_every: int) -> None:
    """One worker: load the shared study and run ``trials`` trials of it (what each machine runs)."""
    import functools

    import optuna
    import torch

    import mltrack_optuna

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    mltrack_optuna.optimize(
        study,
        functools.partial(objective, timesteps=timesteps, eval_every=eval_every),
        n_trials=trials,
        experiment_name=EXPERIMENT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6, help="trials in all (split over the workers)")
    parser.add_argument("--timesteps", type=int, default=4_000, help="training steps per trial")
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--study", default=f"ppo-cartpole-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--start-cluster", action="store_true", help="run a cluster of its own meanwhile")
    args = parser.parse_args()

    import optuna

    cluster = None
    if args.start_cluster:
        from mltrack_mlflow.cluster import start_cluster

        cluster = start_cluster("mltrack_cluster")
        os.environ.update(cluster.trainer_env())
        os.environ["OPTUNA_STORAGE"] = cluster.optuna_storage
        print(f"cluster up: MLflow UI at {cluster.tracking_uri}", flush=True)
    try:
        storage = os.environ.get("OPTUNA_STORAGE")
        if not storage or os.environ.get("ML_TRACKING_BACKEND") != "mlflow":
            print('set the cluster\'s environment first: eval "$(mltrack cluster env)"', file=sys.stderr)
            return 2
        optuna.create_study(
            study_name=args.study,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=args.eval_every),
        )
        per_worker = [
            args.trials // args.workers + (i < args.trials % args.workers) for i in range(args.workers)
        ]
        started = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=worker, args=(args.study, storage, n, args.timesteps, args.eval_every))
            for n in per_worker
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        took = time.monotonic() - started
        if any(proc.exitcode for proc in procs):
            print(f"a worker failed: exit codes {[p.exitcode for p in procs]}", file=sys.stderr)
            return 1
        study = optuna.load_study(study_name=args.study, storage=storage)
        states = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
        print(
            f"{len(study.trials)} trials by {args.workers} workers in {took:.0f} s ({states}); "
            f"best mean reward {study.best_value:.1f} with {study.best_params}",
            flush=True,
        )
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        best = sorted(complete, key=lambda t: t.value or 0.0, reverse=True)[:3]
        runs = [t.user_attrs["mltrack:run_id"][:8] for t in best]
        mltrack_cli = str(Path(sys.executable).parent / "mltrack")
        command = [mltrack_cli, "compare", *runs, "--metric", "eval/best_mean_reward", "--metric", "value"]
        print("$ mltrack compare " + " ".join(command[2:]), flush=True)
        subprocess.run(command, check=False)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
