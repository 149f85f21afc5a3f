"""The plugin manager: finds plugins, selects backends, dispatches hook calls.

Plugins come from the entry-point group ``mltrack``, loaded lazily, once, each on its own:
a plugin that fails to import is skipped with a warning naming it (``MLTRACK_STRICT_PLUGINS=1``
re-raises). ``MLTRACK_LOAD_PLUGINS=a,b`` loads only those (empty: none);
``MLTRACK_BLOCK_PLUGINS=a,b`` never loads those; ``MLTRACK_TRACE_HOOKS=1`` logs every hook
call with its duration on stderr.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from mltrack import hookspecs
from mltrack.backend import BACKEND_HOOKS, Backend
from mltrack.config import BackendConfig, TrackingConfig, parse_backend_options
from mltrack.errors import (
    BackendError,
    NoBackendError,
    PluginContractError,
    PluginLoadError,
    UnknownBackendError,
)
from mltrack.settings import env

if TYPE_CHECKING:
    from mltrack.models import (
        ExperimentSummary,
        HealthStatus,
        MetricSeries,
        ModelArtifact,
        RunFilter,
        UiHandle,
    )

__all__ = [
    "ActiveBackends",
    "BackendRegistration",
    "HookTarget",
    "PluginHost",
    "PluginLoadWarning",
    "contract_problems",
    "get_plugin_host",
]

log = logging.getLogger("mltrack")
ENTRY_POINT_GROUP = "mltrack"
BACKEND_PREFIX = "backend:"
READ_HOOKS = frozenset(
    {
        "mltrack_list_runs",
        "mltrack_get_run",
        "mltrack_get_metrics",
        "mltrack_list_artifacts",
        "mltrack_open_ui",
    }
)
"""Hooks asked of the primary backend only: a plugin that is not a backend is never asked."""
WRITE_HOOKS = frozenset(
    {
        "mltrack_create_run",
        "mltrack_log_metrics",
        "mltrack_log_params",
        "mltrack_log_artifact",
        "mltrack_set_tags",
        "mltrack_set_state",
        "mltrack_finish_run",
        "mltrack_delete_run",
    }
)
"""Hooks called on every write target: each backend and each observer, in order, per run."""
INSTALL_HINT = "install one (pip install mltrack-aim)"
FIRST_PARTY_BACKENDS: Mapping[str, str] = {
    "aim": "mltrack-aim",
    "mlflow": "mltrack-mlflow",
    "tensorboard": "mltrack-tensorboard",
    "wandb": "mltrack-wandb",
}
"""The distribution providing each first-party backend (its entry point has the backend's
name), so an unknown-backend error names the package to install; none is imported here."""


BUILTIN_PLUGINS: Mapping[str, str] = {"memory": "mltrack.memory"}
"""Plugins of mltrack itself, registered before any entry point (``MLTRACK_BLOCK_PLUGINS`` may block them)."""

HOOK_NAMES: frozenset[str] = frozenset(n for n in dir(hookspecs) if n.startswith("mltrack_"))
"""Every hook of the contract, as named in :mod:`mltrack.hookspecs`."""
HOOKS_WHERE = "(hooks: mltrack.hookspecs)"


def _closest_hook(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(HOOK_NAMES), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else "no hook has a similar name: rename or remove it"


def contract_problems(pm: pluggy.PluginManager, plugin: object, *, backend: bool) -> list[str]:
    """What in ``plugin`` breaks the hook contract, each as a phrase ("implements unknown hook ...").

    Every ``@hookimpl`` must name a hook of :mod:`mltrack.hookspecs` (by its own name or
    ``specname``): pluggy accepts any name and never calls the rest, so a plugin defining
    ``mltrack_log_metric`` would silently lose every point.

    A plugin that is not a backend implementing a read hook is flagged too: reads are asked of
    the primary backend only, so that hook would never be called.

    Methods named ``mltrack_*`` without ``@hookimpl`` are flagged on **backend objects**: pluggy
    registers only marked methods, so a backend author who forgot the decorator loses that
    hook's data just the same, and a backend object exists to implement hooks, so the prefix is
    reserved there. On plugin modules and observer objects only an unmarked function named
    exactly like a hook is flagged (a module's own helpers may carry the prefix; names imported
    from elsewhere are not the plugin's).
    """
    problems: list[str] = []
    own_module = plugin.__name__ if inspect.ismodule(plugin) else None
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is not None:
            hook = opts.get("specname") or attr
            if hook not in HOOK_NAMES:
                problems.append(f"implements unknown hook {hook!r}: {_closest_hook(hook)}")
            elif hook in READ_HOOKS and not backend:
                problems.append(
                    f"implements {hook!r}, which only the primary backend is asked: return the object "
                    "implementing it from a factory registered through mltrack_register_backends"
                )
            continue
        if not attr.startswith("mltrack_"):
            continue
        value = inspect.getattr_static(plugin, attr, None)
        if not (callable(value) or isinstance(value, (staticmethod, classmethod))):
            continue
        if own_module is not None and getattr(value, "__module__", None) != own_module:
            continue
        if backend and value is vars(Backend).get(attr):
            problems.append(
                f"does not implement {attr!r} (only mltrack.Backend declares it): "
                "implement it with @mltrack.hookimpl"
            )
            continue
        if attr in HOOK_NAMES:
            problems.append(
                f"has {'method' if own_module is None else 'function'} {attr!r} without @hookimpl, "
                "so mltrack never calls it: decorate it with @mltrack.hookimpl"
            )
        elif backend:
            problems.append(
                f"has method {attr!r} without @hookimpl, and no hook has that name: {_closest_hook(attr)}"
            )
    return problems


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; the others still work."""


@attrs.frozen
class BackendRegistration:
    """A backend a plugin announced through ``mltrack_register_backends``."""

    name: str
    factory: Callable[..., object]
    plugin: str
    persistent: bool = True
    description: str = ""
    out_of_process: bool = False
    """Prefer a separate writer process (the store is slow or heavy to import)."""
    preflight: Callable[[BackendConfig], None] | None = None
    """A cheap check run in the training process before each new run (see the hookspec)."""
    options: type | None = None
    """The backend's options as an attrs class (field: name, type, default); None takes any."""
    backend_class: type | str | None = None
    """The class the factory builds (or ``"module:Class"``, imported only to list its hooks)."""

    def check_options(self, given: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigurationError` if ``given`` holds an unknown or ill-typed option."""
        if self.options is not None:
            parse_backend_options(self.name, self.options, given)

    def hooks(self) -> tuple[str, ...]:
        """The hooks the backend implements, read from its class (never built; may import the store)."""
        cls = self.backend_class
        if cls is None and isinstance(self.factory, type):
            cls = self.factory
        if isinstance(cls, str):
            from importlib import import_module

            module, _, qualname = cls.partition(":")
            found: Any = import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
            cls = found
        if cls is None:
            return ()
        marker = f"{hookspecs.PROJECT}_impl"
        names = set()
        for attr in dir(cls):
            opts = getattr(inspect.getattr_static(cls, attr, None), marker, None)
            if isinstance(opts, dict):
                names.add(opts.get("specname") or attr)
        return tuple(sorted(names))


@attrs.frozen
class PluginInfo:
    """What ``mltrack backends`` prints about one plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


class _Manager(pluggy.PluginManager):
    """pluggy's manager, counting changes to its plugins so callers cached per hook know when to renew."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.generation = 0
        self.callers: weakref.WeakSet[HookTarget] = weakref.WeakSet()
        """Targets holding callers built for the current plugins: emptied on every change, so no
        cache keeps an unregistered plugin (a closed backend and its store) alive."""

    def _changed(self) -> None:
        self.generation += 1
        for target in list(self.callers):
            target.forget_callers()

    # Counted after the change: a cache built while it happens keeps the older number and is renewed.
    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            self._changed()

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        try:
            return super().unregister(plugin, name)
        finally:
            self._changed()

    def set_blocked(self, name: str) -> None:
        try:
            super().set_blocked(name)
        finally:
            self._changed()


class PluginHost:
    """Owns the pluggy ``PluginManager``: loading, backend selection, and who each write reaches."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm: _Manager = _Manager(hookspecs.PROJECT)
        self._observers: tuple[int, list[HookTarget]] = (-1, [])
        self._warned_incomplete: set[str] = set()
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: dict[str, str] = {}
        self.contract_errors: dict[str, str] = {}
        """Entry-point plugins not loaded because they break the hook contract (also in
        ``load_errors``); ``health_check()`` lists them as issues."""
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        self._left_out: dict[str, str] = {}
        """Installed entry points the allow- or block-list kept from loading, and which one did."""
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._lock = threading.RLock()
        if env("MLTRACK_TRACE_HOOKS"):
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)

    # --- loading --------------------------------------------------------------------

    def load(self) -> None:
        """Load every entry-point plugin the allow- and block-lists admit (once)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for name in env("MLTRACK_BLOCK_PLUGINS"):
                self.pm.set_blocked(name)
            for name, module in BUILTIN_PLUGINS.items():
                if not self.pm.is_blocked(name) and self.pm.get_plugin(name) is None:
                    self.pm.register(import_module(module), name=name)
                    self._dists[name] = ("mltrack-core", _core_version())
            if self._load_entry_points:
                self._load_from_entry_points()

    def _load_from_entry_points(self) -> None:
        from importlib.metadata import entry_points

        allowed = env("MLTRACK_LOAD_PLUGINS")  # None when unset: all; empty: none
        allow = None if allowed is None else set(allowed)
        strict = env("MLTRACK_STRICT_PLUGINS")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            if allow is not None and ep.name not in allow and dist_name not in allow:
                self._left_out[ep.name] = "MLTRACK_LOAD_PLUGINS leaves it out"
                continue
            if self.pm.is_blocked(ep.name):
                self._left_out[ep.name] = "MLTRACK_BLOCK_PLUGINS blocks it"
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
                self._register_checked(plugin, ep.name, f"plugin {ep.name!r}", backend=False)
            except Exception as exc:
                where = f"plugin {ep.name!r} from distribution {dist_name or '?'}"
                self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, PluginContractError):
                    self.contract_errors[ep.name] = self.load_errors[ep.name]
                    if strict:
                        raise
                if strict:
                    raise PluginLoadError(f"{where} failed to load: {exc}") from exc
                warnings.warn(
                    f"mltrack: skipped {where}: {type(exc).__name__}: {exc} "
                    "(uninstall or fix it; MLTRACK_STRICT_PLUGINS=1 makes this an error)",
                    PluginLoadWarning,
                    stacklevel=2,
                )
                continue
            self._dists[ep.name] = (dist_name, dist.version if dist is not None else None)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object or module directly (in-process plugins, tests).

        Raises :class:`PluginContractError` if it implements a hook mltrack does not know.
        """
        self.load()
        who = f"plugin {name or self.pm.get_canonical_name(plugin)!r}"
        registered = self._register_checked(plugin, name, who, backend=False)
        if registered is None:
            raise PluginLoadError(f"plugin {name!r} is blocked and was not registered")
        return registered

    def _register_checked(self, plugin: object, name: str | None, who: str, *, backend: bool) -> str | None:
        """Register ``plugin`` once it keeps the hook contract; else raise :class:`PluginContractError`.

        ``who`` names it in the error as the user knows it (``plugin 'x'``, ``backend 'y' ...``).
        """
        problems = contract_problems(self.pm, plugin, backend=backend)
        if problems:
            raise PluginContractError(f"{who} {'; '.join(problems)} {HOOKS_WHERE}")
        try:
            return self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # A hook argument the hook never passes (pluggy names the hook and the argument).
            detail = " ".join(str(exc).split())
            raise PluginContractError(f"{who} does not match its hook: {detail} {HOOKS_WHERE}") from exc

    def block(self, name: str) -> None:
        """Unregister plugin ``name`` if loaded and refuse to load it again."""
        self.pm.set_blocked(name)

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin with its distribution, version and the hooks it implements."""
        self.load()
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda np: str(np[0])):
            if plugin is None or name.startswith(BACKEND_PREFIX):
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            dist, version = self._dists.get(name, (None, None))
            out.append(PluginInfo(name, dist, version, hooks))
        return out

    def observer_targets(self) -> list[HookTarget]:
        """A write target per plugin that is not a backend and implements a write hook.

        Asked again for every operation the writer delivers (cheap: renewed only when a plugin
        was registered or unregistered), so an observer registered while runs are open sees
        every write from then on. Observers always run in the training process, in the
        writer's flusher thread, whichever writer stores the data: one place, both modes.
        """
        self.load()
        generation, targets = self._observers
        if generation == self.pm.generation:
            return targets
        with self._lock:
            self._observers = (-1, [])  # the old targets may hold plugins since unregistered
            targets = []
            for plugin_name, plugin in self.pm.list_name_plugin():
                if plugin is None or plugin_name.startswith(BACKEND_PREFIX):
                    continue
                implemented = {c.name for c in self.pm.get_hookcallers(plugin) or ()}
                if implemented & WRITE_HOOKS:
                    targets.append(HookTarget(self, plugin_name, plugin_name, is_backend=False))
            self._observers = (self.pm.generation, targets)
            return targets

    # --- backends -------------------------------------------------------------------

    def backends(self) -> dict[str, BackendRegistration]:
        """Every backend the loaded plugins announce, by name."""
        self.load()
        found: dict[str, BackendRegistration] = {}
        for impl in self.pm.hook.mltrack_register_backends.get_hookimpls():
            plugin_name = impl.plugin_name

            def register(
                name: str,
                factory: Callable[..., object],
                *,
                persistent: bool = True,
                description: str = "",
                out_of_process: bool = False,
                preflight: Callable[[BackendConfig], None] | None = None,
                options: type | None = None,
                backend_class: type | str | None = None,
                _plugin: str = plugin_name,
            ) -> None:
                hookspecs_name = str(name)
                if hookspecs_name in found:
                    warnings.warn(
                        f"mltrack: backend {hookspecs_name!r} is provided by both "
                        f"{found[hookspecs_name].plugin!r} and {_plugin!r}; using the first",
                        PluginLoadWarning,
                        stacklevel=2,
                    )
                    return
                if options is not None and not attrs.has(options):
                    raise TypeError(
                        f"register({hookspecs_name!r}, options=...) takes an attrs class whose fields "
                        f"are the options, not {options!r}"
                    )
                found[hookspecs_name] = BackendRegistration(
                    hookspecs_name,
                    factory,
                    _plugin,
                    persistent,
                    description,
                    out_of_process,
                    preflight,
                    options,
                    backend_class,
                )

            try:
                impl.function(register=register)
            except Exception as exc:
                self.load_errors[plugin_name] = f"mltrack_register_backends: {type(exc).__name__}: {exc}"
                warnings.warn(
                    f"mltrack: plugin {plugin_name!r} failed to register its backends: {exc}",
                    PluginLoadWarning,
                    stacklevel=2,
                )
        return found

    def select_backends(self, config: TrackingConfig) -> list[BackendRegistration]:
        """The registrations ``config`` asks for, primary first; raise if none fits."""
        available = self.backends()
        names = config.backends
        if not names:
            persistent = sorted(n for n, r in available.items() if r.persistent)
            if len(persistent) == 1:
                names = (persistent[0],)
            elif not persistent:
                raise NoBackendError(
                    f"No tracking backend configured: {INSTALL_HINT} or set ML_TRACKING_BACKEND "
                    f"to one of: {', '.join(sorted(available)) or '(none installed)'}"
                )
            else:
                raise NoBackendError(
                    "No tracking backend configured and several are installed: set "
                    f"ML_TRACKING_BACKEND to one of: {', '.join(persistent)} "
                    "(or several, comma-separated, to write to each)"
                )
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UnknownBackendError(self._unknown_backend(unknown[0], sorted(available)))
        selected = [available[n] for n in dict.fromkeys(names)]
        # Before any store is touched (and in the training process, when a writer process will
        # build the backend): a mistyped option would otherwise fall back to a default store.
        for reg in selected:
            reg.check_options(config.backend_options.get(reg.name, {}))
        return selected

    def _unknown_backend(self, name: str, available: list[str]) -> str:
        """Why backend ``name`` is not available and what to do: install it, unblock it, or fix the name."""
        head = f"Unknown tracking backend {name!r}"
        installed = f"installed backends are {', '.join(available) or '(none)'}"
        errors = "".join(f"; {p} failed to load ({e})" for p, e in sorted(self.load_errors.items()))
        distribution = FIRST_PARTY_BACKENDS.get(name)
        if distribution is not None and name in self._left_out:
            return (
                f"{head}: its plugin {name!r} (from {distribution}) is installed but "
                f"{self._left_out[name]}; {installed}. Let it load, or fix ML_TRACKING_BACKEND."
            )
        if distribution is not None and name not in self.load_errors:
            return (
                f"{head}: it comes with {distribution}, which is not installed: "
                f"pip install {distribution} (or fix ML_TRACKING_BACKEND; {installed}){errors}."
            )
        import difflib

        close = difflib.get_close_matches(name, [*available, *FIRST_PARTY_BACKENDS], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{head}: {hint}{installed}{errors}. {INSTALL_HINT.capitalize()} or fix ML_TRACKING_BACKEND."

    def activate(self, config: TrackingConfig, *, tolerate_secondary: bool = False) -> ActiveBackends:
        """Build the configured backends and register them so hooks reach them.

        A backend whose factory raises makes this raise, unless ``tolerate_secondary`` and it
        is not the primary: then it stands in as a :class:`FailedBackend` (every write to it
        is counted as not delivered, ``health_check()`` names it), so one broken store of a
        fan-out does not stop the others.
        """
        with self._lock:
            registrations = self.select_backends(config)
            instances: list[tuple[str, object]] = []
            try:
                for i, reg in enumerate(registrations):
                    try:
                        backend = reg.factory(config.backend_config(reg.name))
                        plugin_name = f"{BACKEND_PREFIX}{reg.name}:{id(backend):x}"
                        who = f"backend {reg.name!r} (plugin {reg.plugin!r})"
                        try:
                            self._register_checked(backend, plugin_name, who, backend=True)
                            if reg.persistent:
                                self._check_complete(backend, who, strict=config.strict)
                        except PluginContractError:
                            if self.pm.get_plugin(plugin_name) is not None:
                                self.pm.unregister(name=plugin_name)
                            _close(backend, plugin_name)  # it opened its store: let it go
                            raise
                    except Exception as exc:
                        if i == 0 or not tolerate_secondary:
                            raise
                        log.error(
                            "mltrack: backend %r could not start: %s: %s", reg.name, type(exc).__name__, exc
                        )
                        backend = FailedBackend(reg.name, f"{type(exc).__name__}: {exc}")
                        plugin_name = f"{BACKEND_PREFIX}{reg.name}:{id(backend):x}"
                        self.pm.register(backend, name=plugin_name)
                    instances.append((plugin_name, backend))
            except BaseException:
                for plugin_name, _ in instances:
                    self.pm.unregister(name=plugin_name)
                raise
            return ActiveBackends(self, [r.name for r in registrations], instances)

    def _check_complete(self, backend: object, who: str, *, strict: bool) -> None:
        """A persistent backend lacking a hook of :class:`mltrack.Backend` drops what that hook carries.

        Loud either way: an error in strict mode, else a warning once per backend naming the
        missing hooks (a write-only store may choose to ignore, say, params).
        """
        implemented = {c.name for c in self.pm.get_hookcallers(backend) or ()}
        missing = sorted(BACKEND_HOOKS - implemented)
        if not missing:
            return
        message = (
            f"{who} does not implement {', '.join(missing)}: what those hooks carry is not stored "
            "or cannot be read back; implement them with @mltrack.hookimpl (see mltrack.Backend)"
        )
        if strict:
            raise PluginContractError(message)
        if who not in self._warned_incomplete:
            self._warned_incomplete.add(who)
            warnings.warn(f"mltrack: {message}", PluginLoadWarning, stacklevel=3)


class FailedBackend:
    """Stands in for a fan-out backend whose factory raised: every hook says why, health included."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.broken = f"backend {name!r} could not start: {reason}"

    # Every write hook (no arguments needed: pluggy passes only those an implementation names).
    @hookspecs.hookimpl(specname="mltrack_create_run")
    def _create(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_log_metrics")
    def _metrics(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_log_params")
    def _params(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_log_artifact")
    def _artifact(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_set_tags")
    def _tags(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_finish_run")
    def _finish(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl(specname="mltrack_delete_run")
    def _delete(self) -> None:
        raise BackendError(self.broken)

    @hookspecs.hookimpl
    def mltrack_health(self) -> HealthStatus:
        from mltrack.models import HealthStatus

        return HealthStatus(False, (self.broken,), backend=self.name)


class HookTarget:
    """One destination of hook calls: a single backend, or a single observer plugin."""

    def __init__(
        self, host: PluginHost, name: str, plugin_name: str, *, is_backend: bool, broken: str | None = None
    ) -> None:
        self.name = name
        self.is_backend = is_backend
        self.broken = broken
        """Why this backend could not start (a :class:`FailedBackend`), else None."""
        self._host = host
        self._plugin_name = plugin_name
        self._callers: dict[str, tuple[int, Any]] = {}

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call ``hook_name`` on this target's plugin only; errors propagate.

        The per-hook caller is built once and renewed only when the set of plugins changes,
        not per batch.
        """
        pm = self._host.pm
        cached = self._callers.get(hook_name)
        if cached is None or cached[0] != pm.generation:
            remove = [p for n, p in pm.list_name_plugin() if p is not None and n != self._plugin_name]
            cached = self._callers[hook_name] = (pm.generation, pm.subset_hook_caller(hook_name, remove))
            pm.callers.add(self)
        return cached[1](**kwargs)

    def forget_callers(self) -> None:
        """Drop the cached callers (they name every other plugin); the next call builds anew."""
        self._callers = {}


class ActiveBackends:
    """The backends of one configuration, registered with the plugin manager."""

    def __init__(self, host: PluginHost, names: list[str], instances: list[tuple[str, object]]) -> None:
        self.host = host
        self.names = names
        self._instances = instances
        self.backend_targets = [
            HookTarget(host, name, plugin_name, is_backend=True, broken=getattr(backend, "broken", None))
            for name, (plugin_name, backend) in zip(names, instances)
        ]

    @property
    def write_targets(self) -> list[HookTarget]:
        """Every destination of a write: each backend (primary first), then each observer on its own,
        so one that fails or hangs does not silence the others."""
        return [*self.backend_targets, *self.host.observer_targets()]

    @property
    def primary(self) -> str:
        """The backend that answers reads."""
        return self.names[0]

    @property
    def backend_objects(self) -> list[object]:
        """The backend instances, primary first."""
        return [b for _, b in self._instances]

    def read(self, hook_name: str, **kwargs: Any) -> Any:
        """Ask the primary backend; returns its answer (None if it has no such hook)."""
        return self.backend_targets[0].call(hook_name, **kwargs)

    # The read hooks, typed: what core asks of the primary backend (see mltrack.Backend).

    def list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary] | None:
        """The primary backend's runs matching ``run_filter`` (None: it cannot list)."""
        return self.read("mltrack_list_runs", run_filter=run_filter)  # type: ignore[no-any-return]

    def get_run(self, run_id: str) -> ExperimentSummary | None:
        """The run with exactly this id, or None."""
        return self.read("mltrack_get_run", run_id=run_id)  # type: ignore[no-any-return]

    def get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's histories (all when ``names`` is None), or None for an unknown run."""
        return self.read("mltrack_get_metrics", run_id=run_id, names=names)  # type: ignore[no-any-return]

    def list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts, or None for an unknown run."""
        return self.read("mltrack_list_artifacts", run_id=run_id)  # type: ignore[no-any-return]

    def open_ui(self, host: str, port: int | None) -> UiHandle | None:
        """Start the primary store's web UI; None if it has none."""
        return self.read("mltrack_open_ui", host=host, port=port)  # type: ignore[no-any-return]

    def health(self) -> list[tuple[str, Any]]:
        """Each backend's ``mltrack_health`` answer (or the exception it raised), by name.

        Plugins that are not backends (integrations, observers) answer too, under their
        plugin name: a callback that failed to track is as much a health issue as a store.
        """
        out: list[tuple[str, Any]] = []
        for name, (_, backend) in zip(self.names, self._instances):
            impl = getattr(backend, "mltrack_health", None)
            out.append((name, _ask(impl) if impl is not None else None))
        for impl in self.host.pm.hook.mltrack_health.get_hookimpls():
            if not impl.plugin_name.startswith(BACKEND_PREFIX):
                out.append((impl.plugin_name, _ask(impl.function)))
        return out

    def close(self) -> None:
        """Unregister the backends and let each release its store (``close()`` if it has one)."""
        for plugin_name, backend in self._instances:
            if self.host.pm.get_plugin(plugin_name) is not None:
                self.host.pm.unregister(name=plugin_name)
            _close(backend, plugin_name)
        self._instances = []


def _close(backend: object, plugin_name: str) -> None:
    """Let ``backend`` release its store (``close()`` if it has one); a failure is logged."""
    closer = getattr(backend, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception as exc:
            log.warning("mltrack: closing backend %s failed: %s", plugin_name, exc)


def _core_version() -> str | None:
    from mltrack import __version__

    return __version__


def _ask(health: Callable[[], Any]) -> Any:
    try:
        return health()
    except Exception as exc:  # health must report, not raise
        return exc


def _trace_before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    shown = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
    names = ",".join(i.plugin_name for i in hook_impls)
    print(f"mltrack trace: {hook_name}({shown}) -> [{names}]", file=sys.stderr)
    _trace_start[hook_name] = time.perf_counter()


def _trace_after(outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    took = (time.perf_counter() - _trace_start.pop(hook_name, time.perf_counter())) * 1000
    exc = outcome.exception
    result = f"raised {exc!r}" if exc is not None else "ok"
    print(f"mltrack trace: {hook_name} {result} in {took:.2f} ms", file=sys.stderr)


_trace_start: dict[str, float] = {}


def _short(value: Any) -> str:
    text = f"<{len(value)} points>" if hasattr(value, "key_index") else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_plugin_host() -> PluginHost:
    """The process-wide plugin host (created on first use, entry points loaded lazily)."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
        return _host


def reset_plugin_host() -> None:
    """Drop the process-wide host so the next use reloads plugins (tests, reconfiguration)."""
    global _host
    with _host_lock:
        _host = None
