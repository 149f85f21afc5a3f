"""The commands that read and manage runs: ls, show, compare, rm, copy, backends, health."""

from __future__ import annotations

import json
import math
from typing import Any

import click

from mltrack.cli.formatting import (
    NOTE_NAMES,
    SHOW_SERIES,
    common_metrics,
    echo_json,
    final_metric_names,
    finite_values,
    fmt_duration,
    fmt_num,
    fmt_size,
    fmt_time,
    make_console,
    more_line,
    name_matcher,
    no_such_metric,
    series_label,
    short,
    summary_dict,
)
from mltrack.cli.plugin_commands import plugin_commands
from mltrack.cli.store import open_repo, read_config

EXIT_ERROR = 1
STATUSES = ("running", "completed", "failed", "interrupted", "crashed")
_GAP = 2  # spaces between columns (rich's padding of a borderless table)
_NAME_WIDTH = 28  # run and experiment names are cut beyond this, so metrics find room
_MIN_NAME_WIDTH = 8  # ... and run names down to this when the terminal is narrow


@click.command("ls")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--name", help="Only runs of this experiment (or with this run name).")
@click.option("--tag", "tags", multiple=True, help="Only runs with this tag (repeatable: all must match).")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many runs.")
@click.option("--sort", "sort_metric", metavar="METRIC", help="Best first by this final metric.")
@click.option("--metric", "metrics", multiple=True, help="Final metric to show as a column (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(
    status: str | None,
    name: str | None,
    tags: tuple[str, ...],
    limit: int | None,
    sort_metric: str | None,
    metrics: tuple[str, ...],
    as_json: bool,
) -> None:
    """List runs, newest first (or best first with --sort).

    Shows the final metrics that fit the terminal and names the others on stderr; --metric
    columns are always shown (names are cut to make room, run ids never).

    Example: mltrack ls --status completed --sort reward --limit 10
    """
    from mltrack.repository import metric_direction

    runs = open_repo().list_experiments_sync(
        status=status, name=name, tags=tags, limit=None if sort_metric else limit
    )
    if sort_metric and runs and sort_metric not in final_metric_names(runs):
        raise no_such_metric(sort_metric, final_metric_names(runs))
    if sort_metric:
        sign = 1 if metric_direction(sort_metric) < 0 else -1  # no direction: highest first
        present = [
            r for r in runs if sort_metric in r.final_metrics and not math.isnan(r.final_metrics[sort_metric])
        ]
        absent = [r for r in runs if r not in present]
        runs = sorted(present, key=lambda r: sign * r.final_metrics[sort_metric]) + absent
        runs = runs[:limit] if limit else runs
    if as_json:
        echo_json([summary_dict(r) for r in runs])
        return
    if not runs:
        click.echo("No runs found.")
        return
    rows = [
        [
            short(r.experiment_id),
            r.name,
            r.experiment_name or "-",
            r.status.value,
            r.start_time.astimezone().strftime("%m-%d %H:%M"),
            fmt_duration(r.duration),
        ]
        for r in runs
    ]
    fixed = ("id", "name", "experiment", "status", "started", "duration")
    natural = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(fixed)]
    natural[1], natural[2] = min(natural[1], _NAME_WIDTH), min(natural[2], _NAME_WIDTH)
    least = {1: _MIN_NAME_WIDTH, 2: len("experiment")}

    def metric_width(m: str) -> int:
        return max(len(m), *(len(fmt_num(r.final_metrics.get(m))) for r in runs))

    room = make_console().width

    def fit(columns: list[str]) -> tuple[list[int], int]:
        """Widths of the fixed columns beside ``columns``, and the table's width.

        The run and experiment names give way (the one with more to spare first), never the
        ids; the table is wider than ``room`` only if the names cannot give enough.
        """
        widths = list(natural)
        total = sum(widths) + _GAP * (len(widths) - 1) + sum(metric_width(m) + _GAP for m in columns)
        while total > room:
            i = max(least, key=lambda j: widths[j] - least[j])
            if widths[i] <= least[i]:
                break
            widths[i] -= 1
            total -= 1
        return widths, total

    left_out: list[str] = []
    if metrics:  # asked for: always shown
        columns = list(metrics)
    else:  # as many metrics as fit, the others named on stderr
        columns = []
        for m in common_metrics(runs, first=sort_metric):
            if left_out or fit([*columns, m])[1] > room:
                left_out.append(m)
            else:
                columns.append(m)
    widths, total = fit(columns)
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, width in zip(fixed, widths):
        table.add_column(header, no_wrap=True, overflow="ellipsis", width=width)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True, width=metric_width(column))
    for r, row in zip(runs, rows):
        table.add_row(*row, *(fmt_num(r.final_metrics.get(c)) for c in columns))
    # Wider than the console only when the asked-for columns cannot fit even so: the terminal
    # wraps the lines, but nothing is cut.
    console = make_console()
    console.width = max(room, total)
    console.print(table)
    if left_out:
        named = ", ".join(left_out[:NOTE_NAMES]) + (
            f" and {len(left_out) - NOTE_NAMES} more" if len(left_out) > NOTE_NAMES else ""
        )
        click.echo(
            f"note: {len(left_out)} metric column(s) left out to fit {room} columns: {named}; "
            "show them with --metric NAME (repeatable), or everything with --json",
            err=True,
        )


@click.command()
@click.argument("run")
@click.option(
    "--metric",
    "patterns",
    multiple=True,
    metavar="PATTERN",
    help="Only metrics whose name matches this shell-style pattern, e.g. 'train/*' (repeatable).",
)
@click.option("--all", "show_all", is_flag=True, help=f"List every metric, not only the first {SHOW_SERIES}.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (every metric, or those --metric picks)."
)
def show(run: str, patterns: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Show one run: config, status, timing, final metrics, metric statistics and artifacts.

    A run with many metrics lists the first 50 series (by name) and counts the rest; --all
    lists every one, --metric PATTERN only those whose name matches.

    Example: mltrack show 3f2a9c --metric 'eval/*'
    """
    repo = open_repo()
    summary = repo.get_experiment_sync(run)
    history = repo.get_experiment_metrics_sync(summary.experiment_id)
    artifacts = repo.list_artifacts_sync(summary.experiment_id)
    wanted = name_matcher(patterns)
    stats: list[dict[str, Any]] = []
    for series in sorted((s for s in history.all_series if wanted(s.name)), key=series_label):
        values = [float(v) for v in series.values]
        finite = finite_values(values)
        stats.append(
            {
                "metric": series_label(series),
                "count": len(values),
                "first": values[0] if values else None,
                "last": values[-1] if values else None,
                "min": min(finite) if finite else None,
                "max": max(finite) if finite else None,
                "last_step": int(series.steps[-1]) if len(series.steps) else None,
            }
        )
    # A final metric of a series in a context is named "loss{subset=val}": match its name part.
    finals = {k: v for k, v in summary.final_metrics.items() if wanted(k.split("{", 1)[0])}
    # Points a store has not taken yet (disk full, down, a killed trainer): the store cannot say so.
    from mltrack.spool import points_waiting

    waiting = points_waiting(summary.experiment_id)
    if as_json:
        echo_json(
            {
                **summary_dict(summary),
                "points_waiting": {str(path): points for path, points in waiting.items()},
                "final_metrics": finals,
                "metrics": stats,
                "artifacts": [
                    {
                        "name": a.name,
                        "type": a.artifact_type.value,
                        "size": a.size,
                        "sha256": a.sha256,
                        "path": a.file_path,
                        "metadata": a.metadata,
                    }
                    for a in artifacts
                ],
            }
        )
        return
    from rich.table import Table

    console = make_console()
    console.print(f"[bold]{summary.name}[/bold]  run {summary.experiment_id}")
    resumed = f"   resumed: {summary.resumed}x" if summary.resumed else ""
    console.print(f"experiment: {summary.experiment_name}   status: {summary.status.value}{resumed}")
    console.print(
        f"started: {fmt_time(summary.start_time)}   ended: {fmt_time(summary.end_time)}   "
        f"duration: {fmt_duration(summary.duration)}"
    )
    if summary.tags:
        console.print(f"tags: {', '.join(summary.tags)}")
    for path, points in waiting.items():
        console.print(
            f"[yellow]waiting: {points} point(s) of this run in the local spool {path}, not in the "
            "store yet[/yellow] (delivered by its writer once the store takes them, else by `mltrack sync`)",
            soft_wrap=True,
        )
    if summary.config:
        console.print("\n[bold]config[/bold]")
        for key in sorted(summary.config):
            console.print(f"  {key} = {json.dumps(summary.config[key], default=str)}", soft_wrap=True)
    limit = None if show_all else SHOW_SERIES
    if finals:
        console.print("\n[bold]final metrics[/bold]")
        keys = sorted(finals)
        for key in keys[:limit]:
            console.print(f"  {key} = {fmt_num(finals[key])}")
        if limit is not None and len(keys) > limit:
            console.print(more_line(len(keys) - limit, "final metrics", bool(patterns)))
    if stats:
        console.print()
        table = Table(title="metrics", title_justify="left", box=None, header_style="bold")
        for header in ("metric", "count", "first", "last", "min", "max", "last step"):
            table.add_column(header, justify="left" if header == "metric" else "right")
        for s in stats[:limit]:
            table.add_row(
                s["metric"],
                str(s["count"]),
                fmt_num(s["first"]),
                fmt_num(s["last"]),
                fmt_num(s["min"]),
                fmt_num(s["max"]),
                str(s["last_step"]),
            )
        console.print(table)
        if limit is not None and len(stats) > limit:
            console.print(more_line(len(stats) - limit, "metric series", bool(patterns)))
    elif patterns:
        console.print(f"\nno metric matches {' or '.join(repr(p) for p in patterns)}")
    if artifacts:
        console.print()
        table = Table(title="artifacts", title_justify="left", box=None, header_style="bold")
        for header in ("name", "type", "size", "path"):
            table.add_column(header, overflow="fold")
        for a in artifacts:
            table.add_row(a.name, a.artifact_type.value, fmt_size(a.size), a.file_path)
        console.print(table)


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--metric", "metrics", multiple=True, help="Metric to compare (repeatable; default: all final metrics)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def compare(runs: tuple[str, ...], metrics: tuple[str, ...], as_json: bool) -> None:
    """Compare runs side by side: differing hyperparameters, final metrics, the best run.

    A star marks the best run of each metric that has a direction: highest reward, return,
    accuracy or score, lowest loss or error. Times, counts and other metrics get none, and
    neither does a tie (it is named as one).

    Example: mltrack compare 3f2a9c 8be41d --metric reward
    """
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    comparison = open_repo().compare_experiments_sync(list(runs), metrics=list(metrics) or None)
    known = final_metric_names(comparison.runs)
    for metric in metrics:
        if metric not in known:
            raise no_such_metric(metric, known)
    if as_json:
        echo_json(
            {
                "runs": [summary_dict(r) for r in comparison.runs],
                "differing_params": comparison.differing_params,
                "final_metrics": comparison.final_metrics,
                "best": comparison.best,
                "ties": comparison.ties,
            }
        )
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("")
    for r in comparison.runs:
        table.add_column(f"{r.name}\n{short(r.experiment_id)}", justify="right")
    ids = [r.experiment_id for r in comparison.runs]
    for key, values in comparison.differing_params.items():
        table.add_row(key, *(json.dumps(values.get(i), default=str) for i in ids))
    if comparison.differing_params and comparison.metrics:
        table.add_section()
    for m in comparison.metrics:
        best = comparison.best.get(m)
        cells = []
        for i in ids:
            text = fmt_num(comparison.final_metrics[i].get(m))
            cells.append(f"[bold]{text} *[/bold]" if i == best else text)
        table.add_row(m, *cells)
    console = make_console()
    console.print(table)
    if not comparison.differing_params:
        console.print("(no hyperparameters differ)")
    names = {r.experiment_id: f"{r.name} ({short(r.experiment_id)})" for r in comparison.runs}
    for m in comparison.metrics:
        if m in comparison.best:
            console.print(f"best by {m}: {names[comparison.best[m]]}")
        elif m in comparison.ties:
            tied = [names[i] for i in comparison.ties[m]]
            value = fmt_num(comparison.final_metrics[comparison.ties[m][0]][m])
            console.print(f"best by {m}: a tie at {value} between {', '.join(tied[:-1])} and {tied[-1]}")


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(runs: tuple[str, ...], yes: bool) -> None:
    """Delete runs and their artifacts from every configured backend.

    Example: mltrack rm 3f2a9c --yes
    """
    repo = open_repo()
    summaries = [repo.get_experiment_sync(r) for r in runs]
    names = ", ".join(f"{s.name} ({short(s.experiment_id)})" for s in summaries)
    if not yes:
        click.confirm(f"Delete {len(summaries)} run(s): {names}?", abort=True, err=True)
    for s in summaries:
        repo.delete_experiment_sync(s.experiment_id)
    click.echo(f"deleted {len(summaries)} run(s): {names}")


def _options(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{flag} takes KEY=VALUE (e.g. repo_path=/data/aim), not {pair!r}")
        out[key] = value
    return out


@click.command()
@click.argument("runs", nargs=-1)
@click.option("--from", "source", required=True, metavar="BACKEND", help="Backend to copy from.")
@click.option("--to", "target", required=True, metavar="BACKEND", help="Backend to copy to.")
@click.option(
    "--from-option",
    "from_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Source backend option (repeatable).",
)
@click.option(
    "--to-option",
    "to_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Target backend option (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def copy(
    runs: tuple[str, ...],
    source: str,
    target: str,
    from_options: tuple[str, ...],
    to_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Copy runs (default: all) between two installed backends; a second copy adds nothing.

    Each store's location comes from its usual settings (ML_STORAGE_PATH, AIM_REPO_PATH,
    MLFLOW_TRACKING_URI, ...) unless given as an option. Run ids and times are kept.

    Examples: mltrack copy --from aim --to mlflow;
    mltrack copy --from aim --to aim --to-option repo_path=/backup/aim 3f2a9c
    """
    from mltrack.factory import open_repository

    src_opts = _options(from_options, "--from-option")
    dst_opts = _options(to_options, "--to-option")
    if source == target and src_opts == dst_opts:
        raise click.UsageError(
            f"--from and --to are the same store ({source}): give the target its own location, "
            "e.g. --to-option repo_path=/other/place"
        )
    # The source is read (it must exist); the target is written (created if need be).
    with (
        open_repository(source, must_exist=True, **src_opts) as src,
        open_repository(target, **dst_opts) as dst,
    ):
        report = src.copy_to_sync(dst, runs or None)
    if as_json:
        import attrs

        echo_json(attrs.asdict(report))
        return
    click.echo(
        f"copied {len(report.copied) + len(report.replaced)} run(s) from {source} to {target} "
        f"({report.points:,} points, {report.artifacts} artifact(s)); "
        f"{len(report.skipped)} already there"
    )
    if report.replaced:
        click.echo(f"replaced incomplete earlier copies: {', '.join(report.replaced)}")
    if report.running:
        click.echo(f"not copied, still running: {', '.join(report.running)} (copy them once finished)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def backends(as_json: bool) -> None:
    """List installed plugins, the backends and commands they add, hooks, options and load errors.

    Example: mltrack backends --json
    """
    from mltrack.config import describe_options
    from mltrack.plugins import get_plugin_host

    host = get_plugin_host()
    plugins = host.plugins()
    root = click.get_current_context().find_root()
    added = plugin_commands(root, getattr(root.command, "commands", {}))
    regs = host.backends()
    backend_hooks = {name: _backend_hooks(reg) for name, reg in regs.items()}
    backend_options = {
        name: describe_options(reg.options) if reg.options is not None else None for name, reg in regs.items()
    }
    if as_json:
        echo_json(
            {
                "plugins": [
                    {
                        "name": p.name,
                        "distribution": p.distribution,
                        "version": p.version,
                        "hooks": list(p.hooks),
                        "backends": sorted(n for n, r in regs.items() if r.plugin == p.name),
                        "commands": added.of(p.name),
                    }
                    for p in plugins
                ],
                "backends": {
                    name: {
                        "plugin": reg.plugin,
                        "description": reg.description,
                        "persistent": reg.persistent,
                        "hooks": backend_hooks[name],
                        # None: the backend declares no options (it takes any)
                        "options": None
                        if backend_options[name] is None
                        else [
                            {"name": o.name, "type": o.type, "default": o.default}
                            for o in backend_options[name] or ()
                        ],
                    }
                    for name, reg in sorted(regs.items())
                },
                "load_errors": dict(host.load_errors),
            }
        )
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
        if added.of(p.name):
            click.echo(f"  commands: {', '.join(added.of(p.name))}")
        for name in provided:
            hooks = backend_hooks[name]
            click.echo(f"  backend {name}: {regs[name].description}".rstrip(": "))
            click.echo(f"    hooks:   {', '.join(hooks) if isinstance(hooks, list) else hooks}")
            described = backend_options[name]
            shown = (
                "any (none declared)"
                if described is None
                else ", ".join(f"{o.name}: {o.type} = {o.default!r}" for o in described) or "none"
            )
            click.echo(f"    options: {shown}")
    for name, err in sorted(host.load_errors.items()):
        click.echo(f"{name}  FAILED TO LOAD: {err}", err=True)


def _backend_hooks(reg: Any) -> list[str] | str:
    """The hooks of a backend, read from its class; why not, if the class cannot be imported."""
    try:
        return list(reg.hooks()) or "(not known until built: register it with backend_class=...)"
    except Exception as exc:  # the store's library is missing or broken: say so, list the rest
        return f"(cannot import the backend class: {type(exc).__name__}: {exc})"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health(as_json: bool) -> None:
    """Check that the configured backend works; exit code 1 if not.

    Example: mltrack health --json
    """
    from mltrack.factory import health_sync

    status = health_sync(read_config())
    if as_json:
        echo_json(
            {
                "is_healthy": status.is_healthy,
                "backend": status.backend,
                "issues": list(status.issues),
                "details": status.details,
            }
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
