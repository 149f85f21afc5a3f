"""``mltrack cluster up|down|env``: the reference deployment (PostgreSQL, S3, ``mlflow server``) here.

``up`` starts it, prints the environment trainers set and runs until Ctrl-C or ``down``
(its servers die with it); ``env`` prints that environment again; ``down`` stops it by PID.
Nothing of mlflow, psycopg or boto3 is imported until a command runs.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType

import click

__all__ = ["cluster", "env_lines"]

_FOLDER = click.option(
    "--dir",
    "folder",
    default="mltrack_cluster",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The cluster's data folder (PostgreSQL, object store, state).",
)


def env_lines(env: Mapping[str, str], optuna_storage: str | None = None) -> list[str]:
    """``export NAME=value`` lines of a trainer's environment, Optuna's storage URL last."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    if optuna_storage:
        lines.append(f"export OPTUNA_STORAGE={shlex.quote(optuna_storage)}  # sweeps: Optuna's RDBStorage")
    return lines


@click.group("cluster")
def cluster() -> None:
    """Run the reference deployment here: PostgreSQL, an S3 store (SeaweedFS) and `mlflow server`."""


@cluster.command("up")
@_FOLDER
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every server binds.")
@click.option("--port", type=int, default=None, help="MLflow's port (default: a free one).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="MLflow server workers."
)
@click.option(
    "--allowed-hosts",
    default=None,
    help="MLflow 3's --allowed-hosts (needed with --host 0.0.0.0), e.g. 'tracker.lan:5000,10.0.0.5:5000'.",
)
def up(folder: str, host: str, port: int | None, workers: int, allowed_hosts: str | None) -> None:
    """Start the cluster, print the trainers' environment, and run until Ctrl-C (or `mltrack cluster down`)."""
    from mltrack_mlflow.cluster import read_state, start_cluster

    try:
        state = read_state(folder)
    except Exception:
        state = None
    if state is not None and _alive(state.owner_pid):
        raise click.ClickException(
            f"a cluster already runs from {folder} (pid {state.owner_pid}): `mltrack cluster down`"
        )
    started = time.monotonic()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    cluster_ = start_cluster(
        folder, host=host, mlflow_port=port, workers=workers, allowed_hosts=allowed_hosts
    )
    try:
        cluster_.write_state()
        click.echo(f"cluster up in {time.monotonic() - started:.1f} s from {cluster_.folder}:", err=True)
        click.echo(
            f"  PostgreSQL  {host}:{cluster_.pg_port} (databases mlflow, optuna; pid {cluster_.postgres.pid})",
            err=True,
        )
        click.echo(f"  S3          {cluster_.s3_endpoint} (bucket mlflow; pid {cluster_.s3.pid})", err=True)
        click.echo(
            f"  MLflow      {cluster_.tracking_uri} (UI and tracking API; pid {cluster_.mlflow.pid})",
            err=True,
        )
        click.echo("A trainer sets:", err=True)
        for line in env_lines(cluster_.trainer_env(), cluster_.optuna_storage):
            click.echo(line)
        click.echo("Ctrl-C (or `mltrack cluster down`) stops it.", err=True)
        sys.stdout.flush()
        while not stop.is_set():
            stop.wait(0.5)
            for name, server in (
                ("postgres", cluster_.postgres),
                ("s3", cluster_.s3),
                ("mlflow", cluster_.mlflow),
            ):
                if not server.is_running():
                    raise click.ClickException(f"{name} exited: {server.log()[-1500:]}")
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping the cluster ...", err=True)
        cluster_.stop()
        click.echo("cluster stopped", err=True)


@cluster.command("env")
@_FOLDER
def env(folder: str) -> None:
    """Print the environment a trainer sets to track into the running cluster."""
    from mltrack_mlflow.cluster import read_state

    try:
        state = read_state(folder)
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    for line in env_lines(state.trainer_env(), state.optuna_storage):
        click.echo(line)


@cluster.command("down")
@_FOLDER
def down(folder: str) -> None:
    """Stop the cluster running from the folder (its starter, then any server left, by PID)."""
    from mltrack_mlflow.cluster import stop_cluster

    try:
        state = stop_cluster(folder)
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stopped the cluster of {state.folder} (servers {sorted(state.server_pids.values())})")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
