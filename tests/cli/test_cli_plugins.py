"""Plugins add subcommands to ``mltrack`` through ``mltrack_register_commands``.

Each plugin here is a real module with a real ``mltrack`` entry point: a distribution's
``*.dist-info`` (what ``pip install`` leaves) in a directory on PYTHONPATH.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from _child import env_without
from _cli_helpers import MLTRACK

HELLO = '''
"""Adds `mltrack hello`; records that it was imported, so laziness can be checked."""
import pathlib, os
import click
from mltrack import hookimpl

pathlib.Path(os.environ["MLTRACK_TEST_IMPORTED"], "hello").touch()


@hookimpl
def mltrack_register_commands(cli):
    @cli.command()
    @click.option("--name", default="world", help="Whom to greet.")
    def hello(name):
        """Greet someone (a plugin's command)."""
        click.echo(f"hello {name}")
'''

CLASH = '''
import click
from mltrack import hookimpl


@hookimpl
def mltrack_register_commands(cli):
    @cli.command("ls")
    def my_ls():
        """A plugin's own ls."""
        click.echo("plugin ls")
'''

RAISES = """
from mltrack import hookimpl


@hookimpl
def mltrack_register_commands(cli):
    raise RuntimeError("no commands today")
"""

PLUGINS = {"hello": HELLO, "clash": CLASH, "raises": RAISES}


def _install(site: Path, name: str, source: str) -> None:
    """Install plugin ``name`` as distribution ``mltrack-<name>`` with an ``mltrack`` entry point."""
    module = f"mltrack_test_{name}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"mltrack_{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mltrack-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mltrack]\n{name} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    for name, source in PLUGINS.items():
        _install(site, name, source)
    return site


def _mltrack(
    site: Path, imported: Path, *args: str, plugins: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = env_without(("ML_", "MLTRACK_", "AIM_", "MLFLOW_"))
    env.update(
        PYTHONPATH=str(site),
        MLTRACK_LOAD_PLUGINS=plugins,
        MLTRACK_TEST_IMPORTED=str(imported),
        ML_TRACKING_BACKEND="memory",
        COLUMNS="160",
    )
    env.update(extra)
    return subprocess.run([MLTRACK, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_plugin_command_runs_with_its_options_and_help(site: Path, tmp_path: Path) -> None:
    proc = _mltrack(site, tmp_path, "hello", "--name", "Ada", plugins="memory,hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello Ada\n"
    helped = _mltrack(site, tmp_path, "hello", "--help", plugins="memory,hello")
    assert helped.returncode == 0, helped.stderr
    assert "Greet someone" in helped.stdout
    assert "--name" in helped.stdout


def test_mltrack_help_does_not_load_plugins_and_says_where_their_commands_are(
    site: Path, tmp_path: Path
) -> None:
    proc = _mltrack(site, tmp_path, "--help", plugins="memory,hello")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "hello").exists(), "mltrack --help imported a plugin"
    assert "`mltrack backends` lists them" in proc.stdout
    assert "  ls " in proc.stdout


def test_backends_lists_the_commands_each_plugin_adds(site: Path, tmp_path: Path) -> None:
    text = _mltrack(site, tmp_path, "backends", plugins="memory,hello")
    assert text.returncode == 0, text.stderr
    assert "hello  [mltrack-hello 1.0]" in text.stdout
    assert "  commands: hello" in text.stdout
    data = json.loads(_mltrack(site, tmp_path, "backends", "--json", plugins="memory,hello").stdout)
    commands = {p["name"]: p["commands"] for p in data["plugins"]}
    assert commands == {"hello": ["hello"], "memory": []}


def test_a_plugin_command_named_like_a_built_in_is_an_error_naming_the_plugin(
    site: Path, tmp_path: Path
) -> None:
    for args in (("ls",), ("hello",)):
        proc = _mltrack(site, tmp_path, *args, plugins="memory,hello,clash")
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.startswith("error: plugin 'clash' adds command 'ls', which mltrack has built in")
        assert "MLTRACK_BLOCK_PLUGINS=clash" in proc.stderr
    proc = _mltrack(site, tmp_path, "ls", plugins="memory,hello,clash", MLTRACK_BLOCK_PLUGINS="clash")
    assert proc.returncode == 0, proc.stderr


def test_a_plugin_whose_hook_raises_is_named_on_stderr_and_the_other_commands_work(
    site: Path, tmp_path: Path
) -> None:
    proc = _mltrack(site, tmp_path, "hello", plugins="memory,hello,raises")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello world\n"
    assert "plugin 'raises' failed to add its commands: RuntimeError: no commands today" in proc.stderr
    listed = _mltrack(site, tmp_path, "ls", plugins="memory,hello,raises")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "No runs found.\n"


def test_a_command_of_a_plugin_left_out_is_unknown(site: Path, tmp_path: Path) -> None:
    proc = _mltrack(site, tmp_path, "hello", plugins="memory")
    assert proc.returncode == 2
    assert "No such command 'hello'" in proc.stderr
