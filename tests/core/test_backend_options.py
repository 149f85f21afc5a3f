"""Backend options are declared and typed: a mistyped or ill-typed option is an error, never ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

import mltrack
from mltrack import hookimpl
from mltrack.cli import main
from mltrack.config import TrackingConfig, parse_backend_options
from mltrack.errors import ConfigurationError
from mltrack.memory import MemoryBackend
from mltrack.plugins import PluginHost, get_plugin_host

pytest.importorskip("mltrack_aim")


@attrs.frozen(kw_only=True)
class TypedOptions:
    store: str = "default"
    colour: str | None = None
    retries: int = 3
    timeout: float = 1.5
    verbose: bool = False


class TypedPlugin:
    @hookimpl
    def mltrack_register_backends(self, register: Any) -> None:
        register("typed", MemoryBackend, persistent=False, options=TypedOptions)


def test_a_mistyped_aim_option_names_the_closest_and_the_valid_ones_at_configure_time() -> None:
    with pytest.raises(ConfigurationError) as err:
        mltrack.configure_backend("aim", repo_pth="/tmp/x")
    message = str(err.value)
    assert message.startswith("unknown option 'repo_pth' for backend 'aim': did you mean 'repo_path'? ")
    assert (
        "valid options: repo_path, artifacts_dir, index_timeout, crash_grace, storage_path, experiment_name"
        in message
    )
    assert mltrack.config.current_config().backends == ()  # nothing was configured


def test_configure_aim_backend_rejects_a_mistyped_option() -> None:
    from mltrack_aim import configure_aim_backend

    with pytest.raises(ConfigurationError, match="did you mean 'repo_path'"):
        configure_aim_backend(repo_pth="/tmp/x")  # type: ignore[arg-type]


def test_an_ill_typed_option_says_which_type_it_takes() -> None:
    with pytest.raises(ConfigurationError) as err:
        mltrack.configure_backend("aim", index_timeout="soon")
    assert str(err.value) == (
        "option 'index_timeout' for backend 'aim' takes a float (default 10.0), not 'soon'"
    )


def test_mlflow_options_are_checked_too() -> None:
    pytest.importorskip("mltrack_mlflow")
    with pytest.raises(ConfigurationError, match="did you mean 'tracking_uri'"):
        mltrack.configure_backend("mlflow", tracking_url="sqlite:///x.db")


def test_text_values_are_converted_to_the_declared_type() -> None:
    parsed = parse_backend_options(
        "typed", TypedOptions, {"retries": "5", "timeout": "2", "verbose": "yes", "colour": "red"}
    )
    assert parsed == TypedOptions(retries=5, timeout=2.0, verbose=True, colour="red")
    with pytest.raises(ConfigurationError, match=r"option 'verbose' for backend 'typed' takes a bool"):
        parse_backend_options("typed", TypedOptions, {"verbose": "maybe"})
    with pytest.raises(ConfigurationError, match=r"option 'retries' .* takes an int"):
        parse_backend_options("typed", TypedOptions, {"retries": 2.5})


def test_a_backend_unknown_at_configure_time_is_checked_at_activation(tmp_path: Path) -> None:
    host = PluginHost(load_entry_points=False)
    config = TrackingConfig(
        backends=("typed",), backend_options={"typed": {"store": str(tmp_path), "colr": "x"}}
    )
    host.register(TypedPlugin(), name="typed-plugin")
    with pytest.raises(
        ConfigurationError, match=r"unknown option 'colr' for backend 'typed': did you mean 'colour'\?"
    ):
        host.activate(config)


def test_configure_time_check_covers_plugins_registered_in_code(tmp_path: Path) -> None:
    get_plugin_host().register(TypedPlugin(), name="typed-plugin")
    with pytest.raises(ConfigurationError, match="unknown option 'colr'"):
        mltrack.configure_backend("typed", colr="red")
    mltrack.configure_backend("typed", store=str(tmp_path), colour="red")  # fine


def test_a_backend_declaring_no_options_takes_any(tmp_path: Path) -> None:
    mltrack.configure_backend("memory", store=str(tmp_path), anything="goes")


def test_copy_rejects_a_mistyped_target_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["copy", "--from", "memory", "--to", "aim", "--to-option", f"repo_pth={tmp_path / 'b'}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: unknown option 'repo_pth' for backend 'aim': did you mean 'repo_path'?" in err
    assert not (tmp_path / "aim_logs").exists()


def test_mltrack_backends_shows_each_backends_hooks_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    get_plugin_host().register(TypedPlugin(), name="typed-plugin")
    assert main(["backends", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    typed = data["backends"]["typed"]
    assert typed["plugin"] == "typed-plugin"
    assert "mltrack_log_metrics" in typed["hooks"]
    assert {"name": "retries", "type": "int", "default": 3} in typed["options"]
    assert {"name": "colour", "type": "str | None", "default": None} in typed["options"]
    aim = data["backends"]["aim"]
    assert [o["name"] for o in aim["options"]] == [
        "repo_path",
        "artifacts_dir",
        "index_timeout",
        "crash_grace",
    ]
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "options: store: str = 'default', colour: str | None = None, retries: int = 3" in out
