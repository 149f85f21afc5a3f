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
    handle = backends.open_ui(host, port)
    if handle is None:
        raise click.ClickException(f"backend {backends.primary!r} has no web UI")
    click.echo(f"{backends.primary} UI: {handle.url}  (pid {handle.pid}; Ctrl-C to stop)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
        click.echo("UI stopped.")
