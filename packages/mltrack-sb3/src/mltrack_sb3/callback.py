"""``TrackingCallback``: track a Stable-Baselines3 training run with mltrack.

::

    from stable_baselines3 import PPO
    from mltrack_sb3 import TrackingCallback

    callback = TrackingCallback("PPO_CartPole", config={"note": "baseline"}, eval_freq=1000)
    model = PPO("MlpPolicy", "CartPole-v1")
    model.learn(total_timesteps=50_000, callback=callback)
    print(callback.best_model_path)
"""

from __future__ import annotations

import copy
import functools
import math
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from mltrack.errors import RunNotFoundError, RunStateError
from mltrack.factory import experiment_repository, start_run
from mltrack.models import ArtifactType, ExperimentStatus
from mltrack.tracker import ActiveRun
from mltrack_sb3._envs import EvalEnvError, as_vec_env, copy_training_env
from mltrack_sb3._failures import FailureReporter
from mltrack_sb3.hyperparameters import model_hyperparameters
from mltrack_sb3.output import MLTrackOutputFormat

__all__ = ["TrackingCallback"]

# Methods of the algorithm that run the body of ``learn()``. SB3 calls no callback when
# ``learn()`` raises, so these are wrapped for the length of training to finish the run
# FAILED (or INTERRUPTED) before the exception leaves ``learn()``.
_GUARDED_METHODS = ("collect_rollouts", "train", "dump_logs", "_dump_logs")


def _next_multiple(current: int, every: int) -> float:
    return (current // every + 1) * every if every > 0 else math.inf


def _first_vec_normalize(env: VecEnv) -> VecNormalize | None:
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecNormalize):
            return env
        env = env.venv
    return None


class TrackingCallback(BaseCallback):
    """Track SB3 training as an mltrack run: metrics, evaluations, best model, checkpoints.

    When training starts it creates a run of ``experiment_name`` whose config is the
    model's public hyperparameters updated with ``config``, and adds an mltrack output to
    the model's SB3 logger (stdout, CSV and TensorBoard output carry on as before), so every
    numeric value SB3 records is tracked at each dump with ``step=num_timesteps`` (every
    ``log_interval``-th dump). Each finished episode's reward and length are tracked as
    ``episode/reward`` and ``episode/length``.

    Every ``eval_freq`` timesteps it evaluates the policy on ``eval_env`` (a fresh copy of
    the training env when not given) over ``n_eval_episodes`` and tracks
    ``eval/mean_reward``, ``eval/std_reward`` and ``eval/mean_ep_length``; an evaluation
    better than all before it saves the model as ``best_model.zip`` in
    ``best_model_save_path`` (see :attr:`best_model_path`) and logs it as a MODEL artifact
    with its score. With ``eval_at_end``, training ends with one more evaluation unless
    the last one was at the final timestep. Every ``save_freq`` timesteps it saves a
    checkpoint into ``checkpoint_dir`` and logs it (CHECKPOINT); at the end it saves and
    logs ``final_model.zip``.

    The run ends COMPLETED, FAILED when training raises (the error is recorded in the
    run's config under ``error``; the exception propagates), or INTERRUPTED on
    KeyboardInterrupt, with final metrics: the last ``rollout/ep_rew_mean``,
    ``eval/best_mean_reward``, ``total_timesteps`` and ``wall_time_seconds``.

    Tracking failures never stop training: they are warned about once and reported by
    ``mltrack.health_check()``. Each ``learn()`` call is one run.

    ``resume=<run id or unique prefix>`` continues that stored run instead of starting one
    (a checkpoint loaded with ``PPO.load(...)`` and trained on with ``model.learn(...,
    reset_num_timesteps=False)``): metrics go on at the model's ``num_timesteps``, the config
    read from the model is merged into the run's (``total_timesteps`` takes the new value),
    the best model so far is only replaced by a better evaluation, and the run counts one
    more resume. An unknown id or a run still RUNNING raises at training start
    (:class:`mltrack.errors.RunNotFoundError`, :class:`mltrack.errors.RunStateError`).
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        eval_freq: int = 0,
        save_freq: int = 0,
        log_interval: int = 1,
        *,
        eval_env: gym.Env[Any, Any] | VecEnv | None = None,
        n_eval_episodes: int = 5,
        deterministic: bool = True,
        best_model_save_path: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        eval_at_end: bool = True,
        run_name: str | None = None,
        tags: Iterable[str] | None = None,
        resume: str | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if resume is not None and (not isinstance(resume, str) or not resume.strip()):
            raise ValueError(f"resume must be a run id or a unique prefix of one, got {resume!r}")
        for name, value in (("eval_freq", eval_freq), ("save_freq", save_freq)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {value}")
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        if n_eval_episodes < 1:
            raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}")
        self.experiment_name = experiment_name
        self.user_config = dict(config or {})
        self.eval_freq = eval_freq
        self.save_freq = save_freq
        self.log_interval = log_interval
        self.n_eval_episodes = n_eval_episodes
        self.deterministic = deterministic
        self.eval_at_end = eval_at_end
        self.run_name = run_name
        self.tags = list(tags or ())
        self.resume = resume
        """The run every ``learn()`` call continues (its id or a unique prefix), or None for new runs."""
        self._user_eval_env = eval_env
        self._best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self._checkpoint_dir_arg = None if checkpoint_dir is None else Path(checkpoint_dir)

        self.run: ActiveRun | None = None
        """The mltrack run of the current (or last) ``learn()`` call; None if it could not start."""
        self.best_model_path: str | None = None
        """Where the best model so far is saved (None before the first evaluation)."""
        self.best_mean_reward = -math.inf
        self.last_mean_reward: float | None = None
        self.final_model_path: str | None = None
        self.checkpoint_paths: list[str] = []
        self.model_dir: Path | None = None
        self.checkpoint_dir: Path | None = None

        self._reporter = FailureReporter("TrackingCallback")
        self._output: MLTrackOutputFormat | None = None
        self._sb3_logger: Any = None
        self._eval_env: VecEnv | None = None
        self._owns_eval_env = False
        self._guarded: dict[str, tuple[bool, Any]] = {}
        self._next_eval = math.inf
        self._next_save = math.inf
        self._last_eval_step = -1
        self._started = 0.0
        self._ended = True

    # --- what users read -------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The id of the current (or last) run, None if none could be started."""
        return None if self.run is None else self.run.id

    @property
    def tracking_failures(self) -> int:
        """How many tracking calls failed (training went on regardless)."""
        return self._reporter.failures

    # --- SB3 hooks -------------------------------------------------------------------

    def _on_training_start(self) -> None:
        if not self._ended:  # a previous learn() left without either hook; close that run
            self._finish(ExperimentStatus.INTERRUPTED)
        self._ended = False
        self._started = time.perf_counter()
        self.best_mean_reward = -math.inf
        self.last_mean_reward = None
        self.best_model_path = self.final_model_path = None
        self.checkpoint_paths = []
        self._last_eval_step = -1
        self._install_guard()
        try:
            self._start_run()
            self._prepare_files()
            self._prepare_eval_env()
        except BaseException as exc:
            self._on_training_error(exc)
            raise
        self._next_eval = _next_multiple(self.num_timesteps, self.eval_freq)
        self._next_save = _next_multiple(self.num_timesteps, self.save_freq)

    def _on_step(self) -> bool:
        run = self.run
        infos = self.locals.get("infos")
        if run is not None and infos:
            # Monitor puts "episode" in the info of the step that ends an episode. Env i of
            # the vector did the (n - len + i + 1)-th timestep, so every episode gets its own
            # step even when several envs finish at once.
            first = self.num_timesteps - len(infos) + 1
            for i, info in enumerate(infos):
                episode = info.get("episode")
                if episode is not None:
                    try:
                        run.log_metrics(
                            {"episode/reward": episode["r"], "episode/length": episode["l"]}, step=first + i
                        )
                    except Exception as exc:
                        self._reporter.report("tracking an episode", exc)
        if self.num_timesteps >= self._next_eval:
            self._next_eval = _next_multiple(self.num_timesteps, self.eval_freq)
            self._evaluate()
        if self.num_timesteps >= self._next_save:
            self._next_save = _next_multiple(self.num_timesteps, self.save_freq)
            self._save_checkpoint()
        return True

    def _on_rollout_start(self) -> None:
        self._report_live("rollout")

    def _on_rollout_end(self) -> None:
        self._report_live("train")  # SB3 trains on the rollout next

    def _on_training_end(self) -> None:
        self.num_timesteps = self.model.num_timesteps
        try:
            if self.eval_at_end and self._eval_env is not None and self._last_eval_step != self.num_timesteps:
                self._evaluate()
            self._save_final_model()
        except BaseException as exc:
            self._on_training_error(exc)
            raise
        self._finish(ExperimentStatus.COMPLETED)

    # --- start -----------------------------------------------------------------------

    def _start_run(self) -> None:
        total = getattr(self.model, "_total_timesteps", None)
        config = model_hyperparameters(self.model, total)
        config.update(self.user_config)  # what the user states wins over what we read
        self.run = None
        try:
            self.run = start_run(
                self.experiment_name, config, name=self.run_name, tags=self.tags, resume=self.resume
            )
        except (RunNotFoundError, RunStateError):
            raise  # the run asked for cannot be continued: training into no run, or a new one, is wrong
        except Exception as exc:
            self._reporter.report("resuming the run" if self.resume else "starting the run", exc)
            return
        if self.resume is not None:
            self._restore_best()
        self._output = MLTrackOutputFormat(self.run, log_interval=self.log_interval, reporter=self._reporter)
        # Added next to SB3's own outputs, never instead of them.
        self._sb3_logger = self.model.logger
        self._sb3_logger.output_formats.append(self._output)

    def _restore_best(self) -> None:
        """A resumed run's best evaluation so far, so a worse one does not replace its best model."""
        try:
            stored = experiment_repository().get_experiment_sync(self.run_id or "")
        except Exception as exc:
            self._reporter.report("reading the resumed run", exc)
            return
        best = stored.final_metrics.get("eval/best_mean_reward")
        if best is not None and math.isfinite(best):
            self.best_mean_reward = best

    def _prepare_files(self) -> None:
        if self._best_model_save_path is not None:
            self.model_dir = self._best_model_save_path
        else:
            folder = self.run_id or time.strftime("run-%Y%m%d-%H%M%S")
            self.model_dir = Path("models") / folder
        self.checkpoint_dir = self._checkpoint_dir_arg or self.model_dir / "checkpoints"

    def _prepare_eval_env(self) -> None:
        if self._eval_env is not None and self._owns_eval_env:
            self._eval_env.close()
        self._eval_env, self._owns_eval_env = None, False
        if self.eval_freq <= 0 and not (self.eval_at_end and self._user_eval_env is not None):
            return
        if self._user_eval_env is not None:
            self._eval_env = as_vec_env(self._user_eval_env)
            return
        try:
            self._eval_env = copy_training_env(self.training_env, seed=self.model.seed)
            self._owns_eval_env = True
        except EvalEnvError as exc:
            warnings.warn(
                f"TrackingCallback: evaluation is off, no copy of the training env could be made ({exc}); "
                "pass eval_env= to evaluate",
                UserWarning,
                stacklevel=2,
            )

    # --- work during training ----------------------------------------------------------

    def _report_live(self, phase: str) -> None:
        """Tell live monitors (mltrack-redis) the phase and the timesteps done of ``total_timesteps``."""
        if self.run is None:
            return
        try:
            total = getattr(self.model, "_total_timesteps", 0)
            if total:
                self.run.progress(int(self.num_timesteps), int(total))
            self.run.set_state(phase=phase)
        except Exception as exc:
            self._reporter.report("reporting progress", exc)

    def _log_artifact(
        self, path: Path, artifact_type: ArtifactType, name: str, metadata: Mapping[str, Any]
    ) -> None:
        if self.run is None:
            return
        try:
            self.run.log_artifact(path, artifact_type, name=name, metadata=metadata)
        except Exception as exc:
            self._reporter.report(f"logging artifact {name!r}", exc)

    def _save_model(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)
        return path

    def _artifact_metadata(self, **extra: Any) -> dict[str, Any]:
        return {"algorithm": type(self.model).__name__, "timesteps": int(self.num_timesteps), **extra}

    def _evaluate(self) -> None:
        env = self._eval_env
        if env is None:
            return
        self._report_live("eval")
        train_norm = _first_vec_normalize(self.training_env)
        eval_norm = _first_vec_normalize(env)
        if train_norm is not None and eval_norm is not None:
            eval_norm.obs_rms = copy.deepcopy(train_norm.obs_rms)
            eval_norm.ret_rms = copy.deepcopy(train_norm.ret_rms)
        rewards, lengths = evaluate_policy(
            self.model,
            env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            return_episode_rewards=True,
            warn=False,
        )
        mean_reward = float(np.mean(rewards))
        std_reward = float(np.std(rewards))
        mean_length = float(np.mean(lengths))
        step = self.num_timesteps
        self._last_eval_step = step
        self.last_mean_reward = mean_reward
        if self.run is not None:
            try:
                self.run.log_metrics(
                    {
                        "eval/mean_reward": mean_reward,
                        "eval/std_reward": std_reward,
                        "eval/mean_ep_length": mean_length,
                    },
                    step=step,
                )
            except Exception as exc:
                self._reporter.report("tracking evaluation results", exc)
        if self.verbose >= 1:
            print(f"Eval num_timesteps={step}, episode_reward={mean_reward:.2f} +/- {std_reward:.2f}")
            print(f"Episode length: {mean_length:.2f}")
        if mean_reward > self.best_mean_reward:
            self.best_mean_reward = mean_reward
            assert self.model_dir is not None
            path = self._save_model(self.model_dir / "best_model.zip")
            self.best_model_path = str(path)
            if self.verbose >= 1:
                print(f"New best mean reward, model saved to {path}")
            metadata = self._artifact_metadata(score=mean_reward, metric="eval/mean_reward", best=True)
            self._log_artifact(path, ArtifactType.MODEL, "best_model.zip", metadata)
        if not self._ended and self.model.num_timesteps < getattr(self.model, "_total_timesteps", 0):
            self._report_live("rollout")  # evaluations run between steps of a rollout

    def _save_checkpoint(self) -> None:
        assert self.checkpoint_dir is not None
        self._report_live("checkpoint")
        steps = int(self.num_timesteps)
        path = self._save_model(self.checkpoint_dir / f"model_{steps}_steps.zip")
        self.checkpoint_paths.append(str(path))
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {path}")
        self._log_artifact(path, ArtifactType.CHECKPOINT, path.name, self._artifact_metadata())
        self._save_normalization(f"vecnormalize_{steps}_steps.pkl")
        self._report_live("rollout")  # checkpoints are saved between steps of a rollout

    def _save_final_model(self) -> None:
        assert self.model_dir is not None
        path = self._save_model(self.model_dir / "final_model.zip")
        self.final_model_path = str(path)
        self._log_artifact(path, ArtifactType.MODEL, "final_model.zip", self._artifact_metadata(final=True))
        self._save_normalization("vecnormalize.pkl")

    def _save_normalization(self, file_name: str) -> None:
        # A model trained on normalized observations is useless without the statistics.
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is None:
            return
        assert self.model_dir is not None
        path = (self.checkpoint_dir if "steps" in file_name else self.model_dir) or self.model_dir
        path.mkdir(parents=True, exist_ok=True)
        vec_normalize.save(str(path / file_name))
        self._log_artifact(path / file_name, ArtifactType.OTHER, file_name, self._artifact_metadata())

    # --- the end -----------------------------------------------------------------------

    def _final_metrics(self) -> dict[str, float]:
        finals: dict[str, float] = {
            "total_timesteps": float(self.model.num_timesteps),
            "wall_time_seconds": time.perf_counter() - self._started,
        }
        episodes = self.model.ep_info_buffer
        if episodes:
            finals["rollout/ep_rew_mean"] = float(np.mean([ep["r"] for ep in episodes]))
        if self.best_mean_reward > -math.inf:
            finals["eval/best_mean_reward"] = self.best_mean_reward
        return finals

    def _on_training_error(self, exc: BaseException) -> None:
        if self._ended:
            return
        if isinstance(exc, KeyboardInterrupt):
            self._finish(ExperimentStatus.INTERRUPTED)
            return
        if self.run is not None:
            error = {
                "type": type(exc).__name__,
                "message": str(exc)[:2000],
                "traceback": "".join(traceback.format_exception(exc))[-8000:],
            }
            try:
                self.run.log_params({"error": error})
            except Exception as log_exc:
                self._reporter.report("recording the training error", log_exc)
        self._finish(ExperimentStatus.FAILED)

    def _finish(self, status: ExperimentStatus) -> None:
        self._ended = True
        self._remove_guard()
        if self._sb3_logger is not None and self._output is not None:
            try:
                self._sb3_logger.output_formats.remove(self._output)
            except ValueError:
                pass  # the user replaced the logger's outputs; nothing of ours left to remove
        self._sb3_logger = self._output = None
        if self._eval_env is not None and self._owns_eval_env:
            self._eval_env.close()
            self._eval_env, self._owns_eval_env = None, False
        if self.run is not None:
            try:
                self.run.finish(status, self._final_metrics())
            except Exception as exc:
                self._reporter.report(f"finishing the run {status.value}", exc)

    # --- catching exceptions that leave learn() ------------------------------------------

    def _install_guard(self) -> None:
        model = self.model
        own = vars(model)
        for name in _GUARDED_METHODS:
            method = getattr(model, name, None)
            if method is None or name in self._guarded:
                continue
            self._guarded[name] = (name in own, own.get(name))
            setattr(model, name, self._guard(method))
        # The wrappers live in the model's __dict__ while training runs: keep them out of
        # every model.save() in that time, ours and other callbacks' alike.
        excluded = model._excluded_save_params
        self._guarded["_excluded_save_params"] = (
            "_excluded_save_params" in own,
            own.get("_excluded_save_params"),
        )
        extra = [*self._guarded]
        model._excluded_save_params = lambda: [*excluded(), *extra]  # type: ignore[method-assign]

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                self._on_training_error(exc)
                raise

        return guarded

    def _remove_guard(self) -> None:
        own = vars(self.model)
        for name, (had_own, value) in self._guarded.items():
            if had_own:
                own[name] = value
            else:
                own.pop(name, None)
        self._guarded = {}
