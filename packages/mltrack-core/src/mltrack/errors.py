"""Typed errors: each says what went wrong and what to do about it."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "ArtifactError",
    "BackendError",
    "ConfigurationError",
    "InvalidConfigError",
    "InvalidMetricError",
    "InvalidNameError",
    "InvalidStepError",
    "MLTrackError",
    "NoBackendError",
    "PluginContractError",
    "PluginLoadError",
    "RunNotFoundError",
    "RunStateError",
    "StoreNotFoundError",
    "UnknownBackendError",
    "ValidationError",
    "causes",
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


class PluginContractError(PluginLoadError):
    """A plugin or backend breaks the hook contract: a hook mltrack does not know, a hook
    argument it does not pass, or a backend method named like a hook but lacking ``@hookimpl``.

    A :class:`PluginLoadError` (an entry-point plugin that breaks the contract is not loaded),
    raised at registration instead of every write to that hook being lost later.
    """


class ConfigurationError(MLTrackError, ValueError):
    """A setting is unknown or has a value of the wrong type: a backend option or an
    environment variable. The message names the setting and the values it accepts."""


class BackendError(MLTrackError):
    """A backend failed to store or read data."""


class StoreNotFoundError(BackendError, LookupError):
    """A store opened for reading does not exist (a mistyped path, or nothing written there yet)."""


class RunNotFoundError(MLTrackError, LookupError):
    """No run with the given id (or unique id prefix) exists in the backend."""


class RunStateError(MLTrackError):
    """The run is not in a state that allows the operation (e.g. logging after finish)."""


def causes(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc``, then what it was raised from (``__cause__``, else ``__context__``), ``limit`` at most.

    How a store's error is told apart when a plugin wrapped it: a connection error under a
    BackendError is still a connection error.
    """
    current: BaseException | None = exc
    for _ in range(limit):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__
