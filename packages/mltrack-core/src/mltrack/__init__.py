"""mltrack: backend-agnostic experiment tracking.

Training code imports this one small API; which store receives the data is chosen by the
installed plugins and ``ML_TRACKING_BACKEND``, never by code. Names are loaded lazily so
``import mltrack`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
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
    "RegisterBackend": "mltrack.hookspecs",
    "Backend": "mltrack.backend",
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
        # A submodule named as an attribute (``mltrack.factory.health_sync()``) loads on first use.
        if not name.startswith("_") and find_spec(f"mltrack.{name}") is not None:
            return import_module(f"mltrack.{name}")
        raise AttributeError(f"module 'mltrack' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    # `X as X`: an explicit re-export, so strict type checkers accept `from mltrack import X`.
    from mltrack.backend import Backend as Backend
    from mltrack.config import TrackingConfig as TrackingConfig
    from mltrack.config import configure as configure
    from mltrack.config import configure_backend as configure_backend
    from mltrack.config import reset_configuration as reset_configuration
    from mltrack.copying import CopyReport as CopyReport
    from mltrack.copying import copy_runs as copy_runs
    from mltrack.errors import ArtifactError as ArtifactError
    from mltrack.errors import BackendError as BackendError
    from mltrack.errors import ConfigurationError as ConfigurationError
    from mltrack.errors import InvalidMetricError as InvalidMetricError
    from mltrack.errors import InvalidNameError as InvalidNameError
    from mltrack.errors import InvalidStepError as InvalidStepError
    from mltrack.errors import MLTrackError as MLTrackError
    from mltrack.errors import NoBackendError as NoBackendError
    from mltrack.errors import PluginContractError as PluginContractError
    from mltrack.errors import PluginLoadError as PluginLoadError
    from mltrack.errors import RunNotFoundError as RunNotFoundError
    from mltrack.errors import RunStateError as RunStateError
    from mltrack.errors import StoreNotFoundError as StoreNotFoundError
    from mltrack.errors import UnknownBackendError as UnknownBackendError
    from mltrack.errors import ValidationError as ValidationError
    from mltrack.factory import Terminated as Terminated
    from mltrack.factory import get_experiment_repository as get_experiment_repository
    from mltrack.factory import get_ml_tracker as get_ml_tracker
    from mltrack.factory import health_check as health_check
    from mltrack.factory import open_repository as open_repository
    from mltrack.factory import start_run as start_run
    from mltrack.hookspecs import RegisterBackend as RegisterBackend
    from mltrack.hookspecs import hookimpl as hookimpl
    from mltrack.models import ArtifactType as ArtifactType
    from mltrack.models import ExperimentRun as ExperimentRun
    from mltrack.models import ExperimentStatus as ExperimentStatus
    from mltrack.models import ExperimentSummary as ExperimentSummary
    from mltrack.models import HealthStatus as HealthStatus
    from mltrack.models import MetricBatch as MetricBatch
    from mltrack.models import MetricPoint as MetricPoint
    from mltrack.models import MetricSeries as MetricSeries
    from mltrack.models import ModelArtifact as ModelArtifact
    from mltrack.models import RunFilter as RunFilter
    from mltrack.models import TrainingMetrics as TrainingMetrics
    from mltrack.repository import Comparison as Comparison
    from mltrack.repository import ExperimentRepository as ExperimentRepository
    from mltrack.repository import MetricHistory as MetricHistory
    from mltrack.tracker import ActiveRun as ActiveRun
    from mltrack.tracker import MLTracker as MLTracker
