"""Typed errors: each says what went wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BackendError",
    "InvalidConfigError",
    "InvalidMetricError",
    "InvalidNameError",
    "InvalidStepError",
    "MLTrackError",
    "NoBackendError",
    "PluginLoadError",
    "RunNotFoundError",
    "RunStateError",
    "StoreNotFoundError",
    "UnknownBackendError",
    "ValidationError",
]


class MLTrackError(Exception):
    """Base class of every error mltrack raises on purpose."""


class ValidationError(MLTrackError, ValueError):
    """A value given to the API cannot be stored as it is."""


class InvalidNameError(ValidationError):
    """A metric, experiment, parameter or tag name is empty, too long or not printable."""


class InvalidMetricError(ValidationError, TypeError):
    """A metric value is not a number (int, float, bool, NumPy scalar or 0-d tensor)."""


class InvalidStepError(ValidationError, TypeError):
    """A step is not a non-negative whole number."""


class InvalidConfigError(ValidationError, TypeError):
    """A run config or parameters are not a mapping of names to values."""


class ArtifactError(ValidationError):
    """An artifact path does not name a readable regular file."""


class NoBackendError(MLTrackError):
    """No tracking backend is installed or configured."""


class UnknownBackendError(MLTrackError, LookupError):
    """The configured backend name is not provided by any installed plugin."""


class PluginLoadError(MLTrackError, ImportError):
    """A plugin failed to load (raised only in strict plugin mode; otherwise a warning)."""


class BackendError(MLTrackError):
    """A backend failed to store or read data."""


class StoreNotFoundError(BackendError, LookupError):
    """A store opened for reading does not exist (a mistyped path, or nothing written there yet)."""


class RunNotFoundError(MLTrackError, LookupError):
    """No run with the given id (or unique id prefix) exists in the backend."""


class RunStateError(MLTrackError):
    """The run is not in a state that allows the operation (e.g. logging after finish)."""
