"""mltrack: backend-agnostic experiment tracking.

Training code imports this one small API; which store receives the data is chosen by the
installed plugins and ``ML_TRACKING_BACKEND``, never by code. Names are loaded lazily so
``import mltrack`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "ArtifactType": "mltrack.models",
    "ExperimentRun": "mltrack.models",
    "ExperimentStatus": "mltrack.models",
    "ExperimentSummary": "mltrack.models",
    "HealthStatus": "mltrack.models",
    "MetricBatch": "mltrack.models",
    "MetricPoint": "mltrack.models",
    "MetricSeries": "mltrack.models",
    "ModelArtifact": "mltrack.models",
    "RunFilter": "mltrack.models",
    "TrainingMetrics": "mltrack.models",
    # api
    "ActiveRun": "mltrack.tracker",
    "MLTracker": "mltrack.tracker",
    "Comparison": "mltrack.repository",
    "ExperimentRepository": "mltrack.repository",
    "MetricHistory": "mltrack.repository",
    "get_ml_tracker": "mltrack.factory",
    "get_experiment_repository": "mltrack.factory",
    "health_check": "mltrack.factory",
    "start_run": "mltrack.factory",
    "open_repository": "mltrack.factory",
    "Terminated": "mltrack.factory",
    "CopyReport": "mltrack.copying",
    "copy_runs": "mltrack.copying",
    # configuration
    "TrackingConfig": "mltrack.config",
    "configure": "mltrack.config",
    "configure_backend": "mltrack.config",
    "reset_configuration": "mltrack.config",
    # plugins
    "hookimpl": "mltrack.hookspecs",
    # errors
    "ArtifactError": "mltrack.errors",
    "BackendError": "mltrack.errors",
    "ConfigurationError": "mltrack.errors",
    "InvalidMetricError": "mltrack.errors",
    "InvalidNameError": "mltrack.errors",
    "InvalidStepError": "mltrack.errors",
    "MLTrackError": "mltrack.errors",
    "NoBackendError": "mltrack.errors",
    "PluginContractError": "mltrack.errors",
    "PluginLoadError": "mltrack.errors",
    "RunNotFoundError": "mltrack.errors",
    "RunStateError": "mltrack.errors",
    "StoreNotFoundError": "mltrack.errors",
    "UnknownBackendError": "mltrack.errors",
    "ValidationError": "mltrack.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mltrack' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from mltrack.config import TrackingConfig, configure, configure_backend, reset_configuration
    from mltrack.copying import CopyReport, copy_runs
    from mltrack.errors import (
        ArtifactError,
        BackendError,
        ConfigurationError,
        InvalidMetricError,
        InvalidNameError,
        InvalidStepError,
        MLTrackError,
        NoBackendError,
        PluginContractError,
        PluginLoadError,
        RunNotFoundError,
        RunStateError,
        UnknownBackendError,
        ValidationError,
    )
    from mltrack.factory import (
        Terminated,
        get_experiment_repository,
        get_ml_tracker,
        health_check,
        open_repository,
        start_run,
    )
    from mltrack.hookspecs import hookimpl
    from mltrack.models import (
        ArtifactType,
        ExperimentRun,
        ExperimentStatus,
        ExperimentSummary,
        HealthStatus,
        MetricBatch,
        MetricPoint,
        MetricSeries,
        ModelArtifact,
        RunFilter,
        TrainingMetrics,
    )
    from mltrack.repository import Comparison, ExperimentRepository, MetricHistory
    from mltrack.tracker import ActiveRun, MLTracker
