"""mltrack-optuna: Optuna sweeps tracked with mltrack, a run per trial from the moment it starts.

``mltrack_optuna.optimize(study, objective, n_trials=20)`` runs the study with a parent run
for it and a run per trial (params as config, ``trial.report`` values live, status from the
trial's state). Names are loaded lazily, so ``import mltrack_optuna`` does not import Optuna.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PARENT_RUN_ATTR": "mltrack_optuna.tracking",
    "PRUNED_TAG": "mltrack_optuna.tracking",
    "RUN_ID_ATTR": "mltrack_optuna.tracking",
    "StudyTracker": "mltrack_optuna.tracking",
    "TrackingFailureWarning": "mltrack_optuna.tracking",
    "optimize": "mltrack_optuna.tracking",
    "track_study": "mltrack_optuna.tracking",
    "trial_run": "mltrack_optuna.tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mltrack_optuna' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from mltrack_optuna.tracking import (
        PARENT_RUN_ATTR,
        PRUNED_TAG,
        RUN_ID_ATTR,
        StudyTracker,
        TrackingFailureWarning,
        optimize,
        track_study,
        trial_run,
    )
