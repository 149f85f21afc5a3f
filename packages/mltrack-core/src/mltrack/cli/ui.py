"""``mltrack ui``: the backend's own web UI on the configured store."""

from __future__ import annotations

import signal
import threading

import click

from mltrack.cli.store import read_config


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: the store's own).")
def ui(host: str, port: int | None) -> None:
    """Open the backend's own web UI on the configured store; Ctrl-C stops it.

    Example: mltrack ui --port 43800
    """
    from mltrack.plugins import get_plugin_host

    backends = get_plugin_host().activate(read_config(), tolerate_secondary=True)
    click.get_current_context().call_on_close(backends.close)
    # SIGTERM stops it as Ctrl-C does, from before the UI starts: a TERM that came between
    # the announcement below and a handler set after it killed this process, leaving
    # the UI to its guard and never saying "UI stopped.". A UI still starting is stopped
    # by open_ui's own cleanup when the KeyboardInterrupt reaches it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    handle = None
    try:
        handle = backends.open_ui(host, port)
        if handle is None:
            raise click.ClickException(f"backend {backends.primary!r} has no web UI")
        click.echo(f"{backends.primary} UI: {handle.url}  (pid {handle.pid}; Ctrl-C to stop)")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second TERM ends it at once; the guard ends the UI
        if handle is not None:
            handle.stop()
            click.echo("UI stopped.")
