"""Commands that installed plugins add to ``mltrack`` through ``mltrack_register_commands``.

They are collected once per invocation, when a command is about to run (the plugins load then
anyway, to reach the store), never for ``mltrack --help`` or ``--version``: those stay as fast
as before plugins could add commands.
"""

from __future__ import annotations

from collections.abc import Mapping

import click

_META_KEY = "mltrack.plugin_commands"
HOOK = "mltrack_register_commands"


class PluginCommands:
    """The commands plugins added, by name, and which plugin added each."""

    def __init__(self) -> None:
        self.commands: dict[str, click.Command] = {}
        self.owners: dict[str, str] = {}

    def of(self, plugin: str) -> list[str]:
        """The names of the commands ``plugin`` added, sorted."""
        return sorted(name for name, owner in self.owners.items() if owner == plugin)


def plugin_commands(ctx: click.Context, builtin: Mapping[str, click.Command]) -> PluginCommands:
    """The plugins' commands for this invocation, collected on first use.

    A plugin's command named like a built-in one, or like another plugin's, raises
    :class:`PluginContractError` naming both. A plugin whose hook raises is reported on stderr
    and left out (``MLTRACK_STRICT_PLUGINS=1``: raised), so the other commands still work.
    """
    meta = ctx.find_root().meta
    if _META_KEY not in meta:
        meta[_META_KEY] = _collect(builtin)
    found: PluginCommands = meta[_META_KEY]
    return found


def _collect(builtin: Mapping[str, click.Command]) -> PluginCommands:
    # Imported here: `mltrack --help` never needs them.
    from mltrack.errors import PluginContractError, PluginLoadError
    from mltrack.plugins import get_plugin_host
    from mltrack.settings import env

    host = get_plugin_host()
    host.load()
    found = PluginCommands()
    for impl in getattr(host.pm.hook, HOOK).get_hookimpls():
        if impl.hookwrapper or impl.wrapper:
            continue
        group = click.Group(name="mltrack")  # one per plugin: whose command is whose is known
        arguments = {"cli": group}
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except Exception as exc:
            message = f"plugin {impl.plugin_name!r} failed to add its commands: {type(exc).__name__}: {exc}"
            if env("MLTRACK_STRICT_PLUGINS"):
                raise PluginLoadError(message) from exc
            click.echo(
                f"mltrack: {message} (the other commands work; fix or uninstall it, or skip it with "
                f"MLTRACK_BLOCK_PLUGINS={impl.plugin_name})",
                err=True,
            )
            continue
        for name, command in group.commands.items():
            if name in builtin:
                raise PluginContractError(
                    f"plugin {impl.plugin_name!r} adds command {name!r}, which mltrack has built in: "
                    f"rename the plugin's command, or skip the plugin with MLTRACK_BLOCK_PLUGINS={impl.plugin_name}"
                )
            if name in found.commands:
                raise PluginContractError(
                    f"plugins {found.owners[name]!r} and {impl.plugin_name!r} both add command {name!r}: "
                    f"rename one, or skip one with MLTRACK_BLOCK_PLUGINS=<name>"
                )
            found.commands[name] = command
            found.owners[name] = impl.plugin_name
    return found
