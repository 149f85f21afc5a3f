"""``mltrack sync``: deliver what the local spool holds (offline runs, kills, outages), or list it."""

from __future__ import annotations

from pathlib import Path

import click

from mltrack.cli.commands import EXIT_ERROR
from mltrack.cli.formatting import echo_json


@click.command()
@click.option("--list", "list_only", is_flag=True, help="Only list what is pending; deliver nothing.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="The spool folder (default: MLTRACK_SPOOL_DIR, else ~/.cache/mltrack/spool).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def sync(list_only: bool, directory: Path | None, as_json: bool) -> None:
    """Deliver spooled operations to their stores; exit code 1 if some could not be.

    The spool keeps, on local disk, what a store has not confirmed: runs logged with
    MLTRACK_OFFLINE=1, the last points of a trainer killed together with its writer process,
    points a store did not take (down, disk full). Each spool goes to the store it was
    written for, in order; runs left open are then marked CRASHED. Spools whose trainer or
    writer still runs are listed and left alone.

    Example: mltrack sync --list
    """
    from mltrack.spool import default_spool_dir, pending_spools, recover

    folder = directory or default_spool_dir()
    spools = pending_spools(folder)
    rows: list[dict[str, object]] = []
    failed = False
    for spool in spools:
        row: dict[str, object] = {
            "path": str(spool.path),
            "backends": list(spool.backends),
            "offline": spool.offline,
            "owner": spool.owner,
            "owner_alive": spool.owner_alive,
            "operations": spool.operations,
            "points": spool.points,
            "open_runs": list(spool.open_runs),
        }
        if list_only:
            row["state"] = "in use" if spool.owner_alive else "pending"
        elif spool.owner_alive:
            row["state"] = "in use (skipped)"
        else:
            try:
                ops, points, crashed = recover(spool.path)
            except Exception as exc:  # one spool failing does not stop the others
                failed = True
                row["state"] = "failed"
                row["error"] = f"{type(exc).__name__}: {exc}"
            else:
                row.update(state="delivered", operations=ops, points=points, crashed=crashed)
        rows.append(row)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(f"Nothing spooled in {folder}.")
    else:
        for row in rows:
            runs = ", ".join(str(r) for r in row.get("crashed", row["open_runs"])) or "-"  # type: ignore[attr-defined]
            label = "crashed" if "crashed" in row else "open runs"
            click.echo(
                f"{row['state']}: {row['path']}  backends={','.join(row['backends']) or '-'}  "  # type: ignore[arg-type]
                f"operations={row['operations']}  points={row['points']}  {label}: {runs}"
            )
            if "error" in row:
                click.echo(f"  error: {row['error']}")
    if failed:
        raise SystemExit(EXIT_ERROR)
