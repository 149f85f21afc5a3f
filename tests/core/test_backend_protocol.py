"""``mltrack.Backend`` says what a backend implements, equal to the hookspecs; gaps are loud."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest

import mltrack
from mltrack import hookimpl, hookspecs
from mltrack.backend import BACKEND_HOOKS, Backend
from mltrack.config import TrackingConfig
from mltrack.errors import PluginContractError
from mltrack.memory import MemoryBackend
from mltrack.plugins import PluginHost, PluginLoadWarning

NOT_BACKEND_HOOKS = {
    "mltrack_register_backends",
    "mltrack_register_commands",
    "mltrack_open_ui",
    "mltrack_set_state",
    "mltrack_resume_run",  # optional: resuming on a backend without it is an error naming it
}


def _specs() -> dict[str, Any]:
    return {
        name: getattr(hookspecs, name)
        for name in dir(hookspecs)
        if name.startswith("mltrack_") and name not in NOT_BACKEND_HOOKS
    }


def test_backend_protocol_has_every_backend_hook_with_the_hookspecs_signature() -> None:
    specs = _specs()
    assert set(specs) == BACKEND_HOOKS
    for name, spec in specs.items():
        wanted = inspect.signature(spec)
        got = inspect.signature(getattr(Backend, name))
        assert list(got.parameters)[1:] == list(wanted.parameters), name
        for param in wanted.parameters.values():
            assert got.parameters[param.name].annotation == param.annotation, (name, param.name)
        assert got.return_annotation == wanted.return_annotation, name


def test_backend_is_exported_and_the_memory_backend_implements_all_of_it() -> None:
    assert mltrack.Backend is Backend
    host = PluginHost(load_entry_points=False)
    registration = host.backends()["memory"]  # built in: no entry point needed
    assert BACKEND_HOOKS <= set(registration.hooks())


class _Plugin:
    def __init__(self, name: str, factory: Any) -> None:
        self.name = name
        self.factory = factory

    @hookimpl
    def mltrack_register_backends(self, register: Any) -> None:
        register(self.name, self.factory)


class WritesOnlyMetrics:
    """A persistent backend that forgot most of the contract: params, tags, reads... would vanish."""

    def __init__(self, config: object) -> None:
        pass

    @hookimpl
    def mltrack_create_run(self, run: Any) -> None:
        pass

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: Any) -> None:
        pass


def test_incomplete_persistent_backend_is_a_warning_naming_the_missing_hooks() -> None:
    host = PluginHost(load_entry_points=False)
    host.register(_Plugin("partial", WritesOnlyMetrics), name="partial-plugin")
    with pytest.warns(PluginLoadWarning, match=r"does not implement .*mltrack_log_params.*mltrack_set_tags"):
        active = host.activate(TrackingConfig(backends=("partial",)))
    active.close()


def test_incomplete_persistent_backend_is_an_error_in_strict_mode() -> None:
    host = PluginHost(load_entry_points=False)
    host.register(_Plugin("partial", WritesOnlyMetrics), name="partial-plugin")
    with pytest.raises(PluginContractError, match=r"backend 'partial'.*mltrack_finish_run"):
        host.activate(TrackingConfig(backends=("partial",), strict=True))
    assert not [n for n, _ in host.pm.list_name_plugin() if str(n).startswith("backend:")]


class SubclassForgotOne(MemoryBackend, Backend):  # type: ignore[misc]
    """Declares conformance by subclassing, then overrides a hook without the marker."""

    def mltrack_set_tags(self, run_id: str, tags: Any) -> None:  # no @hookimpl: never called
        super().mltrack_set_tags(run_id, tags)


def test_backend_method_without_marker_is_an_error_even_when_subclassing_the_protocol() -> None:
    host = PluginHost(load_entry_points=False)
    host.register(_Plugin("forgot", SubclassForgotOne), name="forgot-plugin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PluginContractError, match=r"'mltrack_set_tags' without @hookimpl"):
            host.activate(TrackingConfig(backends=("forgot",)))
