"""The hyperparameters of an SB3 model, as plain values a run's config can hold."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from mltrack.models import to_plain

__all__ = ["env_id", "model_hyperparameters"]

# Public attributes that are training state or plumbing, not choices the user made.
_STATE = frozenset(
    {
        "num_timesteps",
        "start_time",
        "exploration_rate",
        "verbose",
        "ep_info_buffer",
        "ep_success_buffer",
        "lr_schedule",
        "exploration_schedule",
        "tensorboard_log",
    }
)
# Hyperparameters SB3 turns into schedules (callables of the remaining progress, 1.0 at start).
_SCHEDULES = frozenset({"learning_rate", "clip_range", "clip_range_vf"})
_SCALARS = (bool, int, float, str)


def env_id(model: BaseAlgorithm) -> str | None:
    """The gymnasium id of the model's training env (``CartPole-v1``), or its class name."""
    env = model.get_env()
    if env is None:
        return None
    try:
        spec = env.get_attr("spec", indices=[0])[0]
    except Exception:  # some vectorized envs cannot fetch wrapper attributes
        spec = None
    if spec is not None and getattr(spec, "id", None):
        return str(spec.id)
    inner = getattr(env.unwrapped, "envs", None)
    if inner:
        return type(inner[0].unwrapped).__name__
    return None


def _policy_name(model: BaseAlgorithm) -> str:
    # The alias the user passed ("MlpPolicy") reads better than the class it maps to.
    policy_class = getattr(model, "policy_class", None)
    for alias, cls in getattr(model, "policy_aliases", {}).items():
        if cls is policy_class:
            return str(alias)
    return policy_class.__name__ if isinstance(policy_class, type) else type(model.policy).__name__


def _plain(name: str, value: Any) -> tuple[bool, Any]:
    """``(True, plain value)`` if ``value`` is a hyperparameter worth recording, else ``(False, None)``."""
    if value is None or isinstance(value, _SCALARS):
        return True, to_plain(value)
    if name in _SCHEDULES and callable(value):
        try:
            return True, float(value(1.0))  # the value at the start of training
        except Exception:
            return True, str(value)
    if isinstance(value, enum.Enum):
        return True, to_plain(value)
    if isinstance(value, tuple) and all(isinstance(v, (*_SCALARS, enum.Enum)) for v in value):
        return True, to_plain(value)  # e.g. train_freq = TrainFreq(4, "step")
    if isinstance(value, Mapping) and name.endswith("_kwargs"):
        return True, to_plain(value)  # policy_kwargs, replay_buffer_kwargs, ...
    module = type(value).__module__
    if module.startswith("numpy") and getattr(value, "shape", None) == ():
        return True, to_plain(value)
    if module == "torch" and type(value).__name__ == "device":
        return True, str(value)
    return False, None


def model_hyperparameters(model: BaseAlgorithm, total_timesteps: int | None = None) -> dict[str, Any]:
    """The model's public hyperparameters as plain values, ready to be a run's config.

    Includes the algorithm, policy, env id and number of envs, every public setting of
    the algorithm (learning_rate, gamma, n_steps, batch_size, ent_coef, buffer_size, seed, ...;
    schedules as their starting value) and ``total_timesteps`` when given. Leaves out
    private state (``_last_obs``), networks, buffers and envs.
    """
    params: dict[str, Any] = {
        "algorithm": type(model).__name__,
        "policy": _policy_name(model),
        "env_id": env_id(model),
        "n_envs": int(model.n_envs),
    }
    for name, value in vars(model).items():
        if name.startswith("_") or name in _STATE or name in params:
            continue
        keep, plain = _plain(name, value)
        if keep:
            params[name] = plain
    if getattr(model, "action_noise", None) is not None:
        params["action_noise"] = repr(model.action_noise)
    # Spaces as text, cut short: an image space's bounds would otherwise print every pixel.
    params["observation_space"] = str(model.observation_space)[:200]
    params["action_space"] = str(model.action_space)[:200]
    if total_timesteps is not None:
        params["total_timesteps"] = int(total_timesteps)
    return params
