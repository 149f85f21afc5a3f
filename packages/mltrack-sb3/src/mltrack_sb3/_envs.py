"""A fresh evaluation env built like the training env, for when the user passes none."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
    VecNormalize,
    VecTransposeImage,
)

__all__ = ["EvalEnvError", "as_vec_env", "copy_training_env"]


class EvalEnvError(RuntimeError):
    """No evaluation env could be built from the training env."""


def as_vec_env(env: gym.Env[Any, Any] | VecEnv) -> VecEnv:
    """``env`` as a one-env ``VecEnv`` with a ``Monitor`` (so episode stats are the env's own)."""
    if isinstance(env, VecEnv):
        return env
    wrapped = env if is_wrapped(env, Monitor) else Monitor(env)
    return DummyVecEnv([lambda: wrapped])


def _make_from_spec(spec: Any) -> gym.Env[Any, Any]:
    # Wrappers without recorded constructor arguments (SB3's Monitor among them) cannot be
    # rebuilt by gymnasium; Monitor is added back below and the others are checked for
    # through the observation and action spaces.
    spec = copy.deepcopy(spec)
    wrappers = getattr(spec, "additional_wrappers", ())
    spec.additional_wrappers = tuple(w for w in wrappers if w.kwargs is not None)
    return gym.make(spec)


def copy_training_env(training_env: VecEnv, seed: int | None = None) -> VecEnv:
    """A new one-env copy of ``training_env``: same gymnasium id and kwargs, same vec wrappers.

    Raises :class:`EvalEnvError` saying why when that is not possible (an env not made from a
    registered id, a vec wrapper we cannot rebuild, different spaces).
    """
    chain: list[VecEnvWrapper] = []
    inner: VecEnv = training_env
    while isinstance(inner, VecEnvWrapper):
        chain.append(inner)
        inner = inner.venv
    try:
        spec = training_env.get_attr("spec", indices=[0])[0]
    except Exception as exc:
        raise EvalEnvError(f"cannot read the training env's spec ({exc})") from exc
    if spec is None:
        raise EvalEnvError("the training env was not made from a registered gymnasium id")
    try:
        env = _make_from_spec(spec)
    except Exception as exc:
        raise EvalEnvError(f"gymnasium.make({spec.id!r}) failed: {exc}") from exc
    vec: VecEnv = DummyVecEnv([lambda: Monitor(env)])
    for wrapper in reversed(chain):
        if isinstance(wrapper, VecNormalize):
            # Statistics are copied from the training env before each evaluation.
            vec = VecNormalize(
                vec,
                training=False,
                norm_obs=wrapper.norm_obs,
                norm_reward=False,
                clip_obs=wrapper.clip_obs,
                gamma=wrapper.gamma,
                epsilon=wrapper.epsilon,
                norm_obs_keys=wrapper.norm_obs_keys,
            )
        elif isinstance(wrapper, VecTransposeImage):
            vec = VecTransposeImage(vec, skip=wrapper.skip)
        elif isinstance(wrapper, VecMonitor):
            continue  # the copy already has a Monitor
        else:
            vec.close()
            raise EvalEnvError(
                f"the training env is wrapped in {type(wrapper).__name__}, which is not copied"
            )
    if (
        vec.observation_space != training_env.observation_space
        or vec.action_space != training_env.action_space
    ):
        vec.close()
        raise EvalEnvError("the copy's observation or action space differs from the training env's")
    if seed is not None:
        vec.seed(seed)
    return vec
