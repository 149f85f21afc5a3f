"""The ``mltrack`` command group and its entry point: every failure ends as one line on stderr."""

from __future__ import annotations

import os
import select
import sys

import click

from mltrack import __version__
from mltrack.cli import commands, export, plot, sync, ui
from mltrack.cli.commands import EXIT_ERROR
from mltrack.cli.plugin_commands import plugin_commands


class MltrackGroup(click.Group):
    """The built-in commands, and those plugins add (collected only when a command is to run)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # A command is about to run: the plugins load now (they would for the store anyway),
        # so a plugin's command clashing with a built-in one is an error whatever runs.
        plugin_commands(ctx, self.commands)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or plugin_commands(ctx, self.commands).commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # `mltrack --help` lists the built-in commands only: loading plugins would double its time.
        return sorted(self.commands)


@click.group(
    cls=MltrackGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Installed plugins may add commands: `mltrack backends` lists them.",
)
@click.version_option(__version__, prog_name="mltrack")
def cli() -> None:
    """mltrack: backend-agnostic experiment tracking.

    Every command reads the backend chosen by ML_TRACKING_BACKEND (or the one installed).
    Run ids may be given as any unique prefix, as `mltrack ls` shows them.
    """


for _command in (
    commands.ls_command,
    commands.show,
    commands.compare,
    export.export,
    plot.plot,
    ui.ui,
    commands.rm,
    commands.copy,
    commands.backends,
    commands.health,
    sync.sync,
):
    cli.add_command(_command)


def _error(message: str) -> int:
    """Print ``error: <message>`` as one line on stderr; the exit code of a failed command."""
    click.echo("error: " + " ".join(message.split()), err=True)
    return EXIT_ERROR


def _os_error_message(exc: OSError) -> str:
    """An OSError in words, with the path and what to check (instead of a traceback)."""
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{what}{where}: check that the path is right and that you may read and write there"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Every failure ends here as one line on stderr (``error: ...``, exit code 1) rather than a
    traceback: the user needs the fix, not the stack. Usage errors keep click's message and
    exit code 2.
    """
    from mltrack.errors import MLTrackError

    try:
        result = cli.main(args=argv, prog_name="mltrack", standalone_mode=False)
        sys.stdout.flush()  # here, so a closed pipe is met while its error can still be handled
    except BrokenPipeError as exc:
        return _stdout_closed() if _reader_gone() else _error(_os_error_message(exc))
    except click.exceptions.UsageError as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        return _error(exc.format_message())
    except MLTrackError as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(_os_error_message(exc))
    except SystemExit as exc:
        if exc.code == EXIT_ERROR and _reader_gone():
            return _stdout_closed()  # click turns a broken pipe into exit code 1
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    return result if isinstance(result, int) else 0


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (and not some other pipe that broke)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)  # type: ignore[union-attr]
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout
        return False


def _stdout_closed() -> int:
    """The exit code once the reader of our output went away (``mltrack show X | head -1``).

    Like other Unix tools, mltrack stops quietly: what was asked for has been read. Output still
    buffered is thrown away, so Python's own flush at exit does not fail a second time.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file behind stdout (captured in tests): nothing to flush
        pass
    return 0
