"""The plugin contract is loud: a hook mltrack does not know is an error at registration, not lost data."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack import hookimpl
from mltrack.config import TrackingConfig
from mltrack.errors import PluginContractError, PluginLoadError
from mltrack.memory import MemoryBackend
from mltrack.plugins import PluginHost

from _plugin_dists import run_py

MISTYPED_PLUGIN = '''
"""A store whose author wrote mltrack_log_metric for mltrack_log_metrics."""
from mltrack import hookimpl


@hookimpl
def mltrack_register_backends(register):
    register("mystore", lambda config: object(), description="never loads")


@hookimpl
def mltrack_log_metric(run_id, batch):
    pass
'''


@pytest.fixture(scope="module")
def contract_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site dir with the ``mystore`` distribution (a mistyped hook) beside nothing else."""
    site = tmp_path_factory.mktemp("contract_site")
    (site / "mltrack_mystore.py").write_text(textwrap.dedent(MISTYPED_PLUGIN))
    dist = site / "mltrack_mystore-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mltrack-mystore\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mltrack]\nmystore = mltrack_mystore\n")
    return site


EXPECTED = (
    "plugin 'mystore' implements unknown hook 'mltrack_log_metric': "
    "did you mean 'mltrack_log_metrics'? (hooks: mltrack.hookspecs)"
)


# --- plugins registered in code ---------------------------------------------------------


def _module(name: str, **functions: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, fn in functions.items():
        fn.__module__ = name
        setattr(module, attr, fn)
    return module


def test_a_plugin_registered_in_code_with_a_mistyped_hook_is_an_error_naming_the_closest() -> None:
    @hookimpl
    def mltrack_log_metric(run_id: str, batch: object) -> None: ...

    host = PluginHost(load_entry_points=False)
    with pytest.raises(PluginContractError) as err:
        host.register(_module("mystore", mltrack_log_metric=mltrack_log_metric), name="mystore")
    assert str(err.value) == EXPECTED
    assert isinstance(err.value, PluginLoadError)
    assert host.pm.get_plugin("mystore") is None


def test_a_specname_that_names_no_hook_is_an_error() -> None:
    class Observer:
        @hookimpl(specname="mltrack_log_param")
        def params(self, run_id: str, params: object) -> None: ...

    with pytest.raises(PluginContractError, match=r"unknown hook 'mltrack_log_param'.*'mltrack_log_params'"):
        PluginHost(load_entry_points=False).register(Observer(), name="obs")


def test_an_argument_the_hook_does_not_pass_is_a_contract_error_too() -> None:
    class Observer:
        @hookimpl
        def mltrack_log_metrics(self, run_id: str, points: object) -> None: ...

    with pytest.raises(PluginContractError, match=r"plugin 'obs'.*mltrack_log_metrics.*points"):
        PluginHost(load_entry_points=False).register(Observer(), name="obs")


def test_a_correct_plugin_registers_and_helpers_named_otherwise_are_ignored() -> None:
    class Observer:
        @hookimpl
        def mltrack_log_metrics(self, run_id: str, batch: object) -> None: ...

        def mltrack_helper_constant(self) -> None:
            """Not a hook and not on a backend: an observer's own helper may carry the prefix."""

    host = PluginHost(load_entry_points=False)
    assert host.register(Observer(), name="obs") == "obs"


def test_strict_tracking_no_longer_drops_every_point_of_a_mistyped_observer(tmp_path: Path) -> None:
    mltrack.configure(strict=True)
    mltrack.configure_backend("memory", store=str(tmp_path))

    class Progress:
        @hookimpl
        def mltrack_log_metric(self, run_id: str, batch: object) -> None: ...

    from mltrack.plugins import get_plugin_host

    with pytest.raises(PluginContractError, match="did you mean 'mltrack_log_metrics'"):
        get_plugin_host().register(Progress(), name="progress")


# --- backend objects, registered in activate() -----------------------------------------------


class MistypedBackend(MemoryBackend):
    @hookimpl
    def mltrack_log_metric(self, run_id: str, batch: object) -> None: ...


class UndecoratedBackend(MemoryBackend):
    def mltrack_set_tags(self, run_id: str, tags: object) -> None:  # no @hookimpl: never called
        raise AssertionError("mltrack never calls a method without @hookimpl")


def _host_with(factory: Any, name: str = "mystore") -> PluginHost:
    class Plugin:
        @hookimpl
        def mltrack_register_backends(self, register: Any) -> None:
            register(name, factory)

    host = PluginHost(load_entry_points=False)
    host.register(Plugin(), name=f"{name}-plugin")
    return host


def _config(tmp_path: Path, *names: str) -> TrackingConfig:
    return TrackingConfig(
        backends=names, backend_options={n: {"store": str(tmp_path)} for n in names}, strict=True
    )


def test_a_backend_object_with_a_mistyped_hook_fails_activation_and_stays_unregistered(
    tmp_path: Path,
) -> None:
    host = _host_with(MistypedBackend)
    with pytest.raises(PluginContractError) as err:
        host.activate(_config(tmp_path, "mystore"))
    assert str(err.value) == (
        "backend 'mystore' (plugin 'mystore-plugin') implements unknown hook 'mltrack_log_metric': "
        "did you mean 'mltrack_log_metrics'? (hooks: mltrack.hookspecs)"
    )
    assert not [n for n, _ in host.pm.list_name_plugin() if n.startswith("backend:")]


def test_a_backend_method_named_like_a_hook_without_hookimpl_is_an_error(tmp_path: Path) -> None:
    host = _host_with(UndecoratedBackend)
    with pytest.raises(PluginContractError) as err:
        host.activate(_config(tmp_path, "mystore"))
    message = str(err.value)
    assert "backend 'mystore'" in message
    assert "has method 'mltrack_set_tags' without @hookimpl, so mltrack never calls it" in message
    assert "decorate it with @mltrack.hookimpl" in message


def test_a_mistyped_secondary_backend_stands_in_as_failed_when_not_strict(tmp_path: Path) -> None:
    class Plugin:
        @hookimpl
        def mltrack_register_backends(self, register: Any) -> None:
            register("good", MemoryBackend)
            register("mystore", MistypedBackend)

    host = PluginHost(load_entry_points=False)
    host.register(Plugin(), name="both")
    config = TrackingConfig(backends=("good", "mystore"), backend_options={"good": {"store": str(tmp_path)}})
    active = host.activate(config, tolerate_secondary=True)
    try:
        broken = active.write_targets[1].broken
        assert broken is not None and "unknown hook 'mltrack_log_metric'" in broken
    finally:
        active.close()


# --- plugins from entry points ---------------------------------------------------------------


def test_an_installed_plugin_with_a_mistyped_hook_does_not_load_and_warns(contract_site: Path) -> None:
    proc = run_py(
        contract_site,
        """
        import mltrack
        from mltrack.plugins import get_plugin_host
        host = get_plugin_host()
        print(sorted(host.backends()), sorted(host.load_errors))
        """,
        MLTRACK_LOAD_PLUGINS="mystore,memory",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['memory'] ['mystore']"
    assert "PluginLoadWarning" in proc.stderr
    assert EXPECTED in proc.stderr


def test_strict_plugins_raises_the_contract_error(contract_site: Path) -> None:
    proc = run_py(
        contract_site,
        "import mltrack.factory as f; f.experiment_repository()",
        MLTRACK_LOAD_PLUGINS="mystore,memory",
        MLTRACK_STRICT_PLUGINS="1",
    )
    assert proc.returncode != 0
    assert f"PluginContractError: {EXPECTED}" in proc.stderr


def test_mltrack_backends_and_health_name_the_plugin_that_did_not_load(contract_site: Path) -> None:
    proc = run_py(
        contract_site,
        "from mltrack.cli import main; raise SystemExit(main(['backends', '--json']))",
        MLTRACK_LOAD_PLUGINS="mystore,memory",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["load_errors"]["mystore"] == f"PluginContractError: {EXPECTED}"
    proc = run_py(
        contract_site,
        "from mltrack.cli import main; raise SystemExit(main(['backends']))",
        MLTRACK_LOAD_PLUGINS="mystore,memory",
    )
    assert f"mystore  FAILED TO LOAD: PluginContractError: {EXPECTED}" in proc.stderr
    proc = run_py(
        contract_site,
        """
        import json, mltrack, mltrack.factory
        mltrack.configure_backend("memory")
        print(json.dumps(mltrack.factory.health_sync().issues))
        """,
        MLTRACK_LOAD_PLUGINS="mystore,memory",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [f"mystore: did not load: PluginContractError: {EXPECTED}"]
