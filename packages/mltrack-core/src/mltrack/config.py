"""Configuration: which backend(s) receive the data, where they store it, how the writer behaves.

Set it with environment variables (the seed's ``ML_TRACKING_BACKEND``, ``ML_STORAGE_PATH``,
``ML_EXPERIMENT_NAME`` and mltrack's own ``MLTRACK_*``) or in code with
:func:`configure_backend`; code wins over the environment.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from mltrack.errors import ConfigurationError
from mltrack.settings import env, parse_bool, parse_names

_T = TypeVar("_T")

__all__ = [
    "SHARED_OPTIONS",
    "BackendConfig",
    "OptionInfo",
    "TrackingConfig",
    "configure",
    "configure_backend",
    "current_config",
    "describe_options",
    "on_config_change",
    "parse_backend_options",
    "reset_configuration",
    "storage_path_setting",
]

DEFAULT_EXPERIMENT_NAME = "default"


def _split_names(raw: str | None) -> tuple[str, ...]:
    return parse_names(raw or "")


SHARED_OPTIONS = ("storage_path", "experiment_name")
"""Options every backend takes (:func:`configure_backend` makes them the shared settings)."""


@attrs.frozen
class OptionInfo:
    """One declared backend option, as ``mltrack backends`` shows it."""

    name: str
    type: str
    default: Any
    help: str = ""


def describe_options(options: type) -> list[OptionInfo]:
    """The options an options class declares (its attrs fields), in declaration order."""
    out = []
    for field in attrs.fields(options):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        elif default is attrs.NOTHING:
            default = None
        shown = (
            field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        )
        out.append(OptionInfo(field.name, str(shown), default, str(field.metadata.get("help", ""))))
    return out


def parse_backend_options(backend: str, options: type[_T], given: Mapping[str, Any]) -> _T:
    """Check ``given`` against backend ``backend``'s options class and build an instance of it.

    An unknown name raises :class:`ConfigurationError` naming the closest valid one and listing
    them all; a value of the wrong type too, naming the type and the default. Text (from the
    command line or the environment) is converted to the declared type: ``"5"`` to 5,
    ``"yes"`` to True. The shared options (``storage_path``, ``experiment_name``) are valid
    for every backend and are not passed to the class.
    """
    declared = {f.name: f for f in attrs.fields(typing.cast(Any, options))}
    valid = [*declared, *(n for n in SHARED_OPTIONS if n not in declared)]
    for name in given:
        if name not in valid:
            import difflib

            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigurationError(
                f"unknown option {name!r} for backend {backend!r}: {hint}valid options: {', '.join(valid)}"
            )
    hints = typing.get_type_hints(options)
    values = {}
    for name, value in given.items():
        if name not in declared:
            continue
        try:
            values[name] = _coerce(value, hints[name])
        except (TypeError, ValueError):
            default = {o.name: o.default for o in describe_options(options)}[name]
            shown = _type_name(declared[name].type)
            article = "an" if shown[:1] in "aeiou" else "a"
            raise ConfigurationError(
                f"option {name!r} for backend {backend!r} takes {article} {shown} "
                f"(default {default!r}), not {value!r}"
            ) from None
    return options(**values)


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (str, int, float, bool, or a union of them with None); else raise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value)
        raise TypeError(value)
    if tp is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise TypeError(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(value)
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return float(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(value)


@attrs.frozen
class BackendConfig:
    """What a backend factory receives: the shared settings plus its own options."""

    name: str
    storage_path: str | None = None
    experiment_name: str = DEFAULT_EXPERIMENT_NAME
    options: Mapping[str, Any] = attrs.field(factory=dict)
    must_exist: bool = False
    """Open an existing store only (for reading): raise :class:`mltrack.errors.StoreNotFoundError`
    rather than create an empty store where none is. Writers leave it False."""


def storage_path_setting(storage_path: str | None) -> str:
    """The setting ``storage_path`` came from, as error messages name it for the user.

    ``ML_STORAGE_PATH`` when the environment holds that value, else the option of
    :func:`configure_backend` (code wins over the environment, so that is where it came from).
    """
    if storage_path is not None and env("ML_STORAGE_PATH") == storage_path:
        return "ML_STORAGE_PATH"
    return "the storage_path option of configure_backend"


def store_location(
    option: str | None, option_name: str, env_var: str | None, storage_path: str | None, default: str
) -> tuple[str, str]:
    """Where a backend's store is, and the setting that said so, for its error messages.

    The same precedence for every backend: its own option in code, then its own environment
    variable (``env_var``, one of :data:`mltrack.settings.SETTINGS`; None for a backend that
    has none), then ``ML_STORAGE_PATH`` / ``storage_path``, then ``default``.
    """
    if option:
        return option, f"the {option_name} option"
    from_env = env(env_var) if env_var is not None else None
    if from_env and env_var is not None:
        return from_env, env_var
    if storage_path:
        return storage_path, storage_path_setting(storage_path)
    return default, "the default: set ML_STORAGE_PATH to choose another"


@attrs.frozen
class TrackingConfig:
    """Every setting mltrack reads; build one with :meth:`from_env` or :func:`configure`."""

    backends: tuple[str, ...] = ()
    """Backend names; the first answers reads, all receive writes. Empty: the one installed."""
    backend_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    storage_path: str | None = None
    experiment_name: str = DEFAULT_EXPERIMENT_NAME
    strict: bool = False
    """Raise store errors into the caller instead of retrying and counting them (for tests)."""
    flush_interval: float = 0.1
    """Seconds between hand-overs of buffered points to the backends."""
    max_buffered_points: int = 1_000_000
    """Points held in memory before log calls wait for the writer (backpressure, never loss)."""
    batch_size: int = 50_000
    """Most points handed to a backend in one ``mltrack_log_metrics`` call."""
    max_retries: int = 4
    """Attempts after the first before a failed write is counted as undelivered."""
    retry_window: float = 60.0
    """Seconds a write failing with a connection-type error (a store restarting) is retried
    before its points are counted as undelivered; the training loop goes on meanwhile."""
    hook_timeout: float | None = 120.0
    """Seconds a plugin's write hook may take before the plugin is cut off (None: wait forever)."""
    keep_secrets: bool = False
    """Store config values whose names look like secrets (password, token, api_key) as given."""
    writer: str = "auto"
    """``thread`` (in this process), ``process`` (a writer process) or ``auto`` (the backend's choice)."""
    must_exist: bool = False
    """Open existing stores only: reading (the ``mltrack`` command) must not create an empty
    store at a mistyped path. Handed to each backend as :attr:`BackendConfig.must_exist`."""

    @classmethod
    def from_env(cls) -> TrackingConfig:
        """Read the environment variables of :data:`mltrack.settings.SETTINGS` (and the README).

        A value that does not parse raises :class:`ConfigurationError` naming the variable.
        """
        return cls(
            backends=env("ML_TRACKING_BACKEND"),
            storage_path=env("ML_STORAGE_PATH"),
            experiment_name=env("ML_EXPERIMENT_NAME"),
            strict=env("MLTRACK_STRICT"),
            flush_interval=env("MLTRACK_FLUSH_INTERVAL"),
            max_buffered_points=env("MLTRACK_MAX_BUFFERED_POINTS"),
            writer=env("MLTRACK_WRITER"),
            keep_secrets=env("MLTRACK_KEEP_SECRETS"),
            hook_timeout=env("MLTRACK_HOOK_TIMEOUT") or None,  # 0: wait forever
            retry_window=env("MLTRACK_RETRY_WINDOW"),
        )

    def backend_config(self, name: str) -> BackendConfig:
        """The settings handed to backend ``name``'s factory."""
        return BackendConfig(
            name=name,
            storage_path=self.storage_path,
            experiment_name=self.experiment_name,
            options=dict(self.backend_options.get(name, {})),
            must_exist=self.must_exist,
        )


_configured: TrackingConfig | None = None


def current_config() -> TrackingConfig:
    """The configuration in force: what code set, else the environment."""
    return _configured if _configured is not None else TrackingConfig.from_env()


def configure(**settings: Any) -> TrackingConfig:
    """Override settings in code (any :class:`TrackingConfig` field); returns the result.

    Trackers created afterwards use it; a tracker already running is drained and replaced.
    """
    global _configured
    _configured = attrs.evolve(current_config(), **settings)
    _on_change()
    return _configured


def configure_backend(name: str, **options: Any) -> TrackingConfig:
    """Select backend ``name`` (or ``"a,b"`` to fan out) and pass it ``options``.

    ``storage_path`` and ``experiment_name`` among the options set the shared settings.
    When the backend's plugin is installed, its options are checked here (an unknown or
    ill-typed one raises :class:`ConfigurationError` listing the valid ones); otherwise they are
    checked when the backend is activated.
    """
    names = _split_names(name)
    if not names:
        raise ValueError("configure_backend needs a backend name, e.g. configure_backend('aim')")
    shared = {k: options.pop(k) for k in SHARED_OPTIONS if k in options}
    per_backend = dict(current_config().backend_options)
    per_backend[names[0]] = {**per_backend.get(names[0], {}), **options}
    _check_now(names[0], per_backend[names[0]])
    return configure(backends=names, backend_options=per_backend, **shared)


def _check_now(backend: str, options: Mapping[str, Any]) -> None:
    """Check ``options`` against backend ``backend``'s declared options, if its plugin is loaded.

    Loading the plugins is cheap (they import no store); a backend not installed yet (or
    registered in code later) is checked at activation instead.
    """
    # Imported here: plugins imports this module.
    from mltrack.plugins import get_plugin_host

    registration = get_plugin_host().backends().get(backend)
    if registration is not None and registration.options is not None:
        parse_backend_options(backend, registration.options, options)


def reset_configuration() -> None:
    """Forget settings made in code and go back to the environment."""
    global _configured
    _configured = None
    _on_change()


_change_listeners: list[Callable[[], object]] = []


def on_config_change(listener: Callable[[], object]) -> None:
    """Call ``listener`` whenever the configuration changes, e.g. to drop what was built from it.

    The factory registers its reset here, so this module, below the factory, never imports it.
    """
    if listener not in _change_listeners:
        _change_listeners.append(listener)


def _on_change() -> None:
    for listener in list(_change_listeners):
        listener()
