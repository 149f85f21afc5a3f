"""The ``mltrack`` command (also ``python -m mltrack``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mltrack import __version__

EXIT_ERROR = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mltrack")
def cli() -> None:
    """mltrack: backend-agnostic experiment tracking.

    The backend comes from ML_TRACKING_BACKEND (or the one installed); see `mltrack backends`.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def backends(as_json: bool) -> None:
    """List installed plugins, the backends they provide, their hooks and load errors.

    Example: mltrack backends --json
    """
    from mltrack.plugins import get_plugin_host

    host = get_plugin_host()
    plugins = host.plugins()
    regs = host.backends()
    if as_json:
        data: dict[str, Any] = {
            "plugins": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "hooks": list(p.hooks),
                    "backends": sorted(n for n, r in regs.items() if r.plugin == p.name),
                }
                for p in plugins
            ],
            "load_errors": dict(host.load_errors),
        }
        click.echo(json.dumps(data, indent=2))
        return
    if not plugins:
        click.echo("No mltrack plugins installed: pip install mltrack-aim")
    for p in plugins:
        provided = sorted(n for n, r in regs.items() if r.plugin == p.name)
        dist = f"{p.distribution} {p.version}" if p.distribution else "(registered in code)"
        click.echo(f"{p.name}  [{dist}]")
        if provided:
            click.echo(f"  backends: {', '.join(provided)}")
        click.echo(f"  hooks:    {', '.join(p.hooks)}")
    for name, err in sorted(host.load_errors.items()):
        click.echo(f"{name}  FAILED TO LOAD: {err}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health(as_json: bool) -> None:
    """Check that the configured backend works; exit code 1 if not.

    Example: ML_TRACKING_BACKEND=aim mltrack health
    """
    from mltrack.factory import health_sync

    status = health_sync()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "is_healthy": status.is_healthy,
                    "backend": status.backend,
                    "issues": list(status.issues),
                    "details": status.details,
                },
                indent=2,
                default=str,
            )
        )
    else:
        state = "healthy" if status.is_healthy else "UNHEALTHY"
        click.echo(f"backend: {status.backend or '(none)'}  {state}")
        for issue in status.issues:
            click.echo(f"  issue: {issue}")
        for name, detail in status.details.get("backends", {}).items():
            for key, value in detail.items():
                click.echo(f"  {name}.{key}: {value}")
    if not status.is_healthy:
        raise SystemExit(EXIT_ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="mltrack", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    except Exception as exc:
        from mltrack.errors import MLTrackError

        if isinstance(exc, MLTrackError):
            click.echo(f"Error: {exc}", err=True)
            return EXIT_ERROR
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
