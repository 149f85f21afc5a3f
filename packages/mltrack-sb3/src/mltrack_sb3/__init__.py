"""mltrack-sb3: track Stable-Baselines3 training with mltrack.

``model.learn(total_timesteps, callback=TrackingCallback("PPO_CartPole", eval_freq=1000))``
creates a run, tracks everything SB3's logger records, evaluates, keeps the best model and
checkpoints, and finishes the run with the right status. Names are loaded lazily, so
importing the package (which mltrack does when it loads plugins) imports neither
Stable-Baselines3 nor a backend.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrackingCallback": "mltrack_sb3.callback",
    "MLTrackOutputFormat": "mltrack_sb3.output",
    "TrackingFailureWarning": "mltrack_sb3._failures",
    "model_hyperparameters": "mltrack_sb3.hyperparameters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mltrack_sb3' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from mltrack_sb3._failures import TrackingFailureWarning
    from mltrack_sb3.callback import TrackingCallback
    from mltrack_sb3.hyperparameters import model_hyperparameters
    from mltrack_sb3.output import MLTrackOutputFormat
