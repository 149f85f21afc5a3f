"""``mltrack plot``: metrics against step, one line per run, to PNG, SVG or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from mltrack.cli.formatting import check_histories, short
from mltrack.cli.store import open_repo


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    required=True,
    help="A metric to plot against step (repeatable: one panel per metric, stacked).",
)
@click.option(
    "--smooth", type=click.IntRange(min=1), default=1, show_default=True, help="Moving average over K points."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="FILE.png, FILE.svg or FILE.html",
)
def plot(runs: tuple[str, ...], metrics: tuple[str, ...], smooth: int, out: Path) -> None:
    """Plot metrics against step, one line per run, to a PNG, SVG or HTML file.

    Several --metric give one panel per metric, stacked and sharing the step axis.

    Example: mltrack plot 3f2a9c 8be41d --metric rollout/ep_rew_mean --metric train/loss --out ppo.png
    """
    if out.suffix.lower() not in (".png", ".svg", ".html"):
        raise click.UsageError("--out must end in .png, .svg or .html")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException(
            "mltrack plot needs matplotlib: pip install 'mltrack-core[plot]'"
        ) from None
    repo = open_repo()
    metrics = tuple(dict.fromkeys(metrics))  # a metric given twice is drawn once
    summaries = [repo.get_experiment_sync(r) for r in runs]
    histories = [repo.get_experiment_metrics_sync(s.experiment_id, names=list(metrics)) for s in summaries]
    check_histories(metrics, summaries, histories)
    # One metric keeps the 9x5 figure; each further one adds a panel of 3 inches below.
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(9, 2 + 3 * len(metrics)), dpi=100, sharex=True, squeeze=False
    )
    for ax, metric in zip(axes[:, 0], metrics):
        for summary, history in zip(summaries, histories):
            if metric not in history:
                raise click.ClickException(f"run {short(summary.experiment_id)} has no metric {metric!r}")
            series = history.series(metric)
            steps = [int(s) for s in series.steps]
            values = _moving_average([float(v) for v in series.values], smooth)
            ax.plot(steps, values, label=f"{summary.name} ({short(summary.experiment_id)})", linewidth=1.5)
        ax.set_ylabel(metric + (f" (moving average of {smooth})" if smooth > 1 else ""))
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        import html
        import io

        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        title = html.escape(", ".join(metrics))
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{buffer.getvalue()}</body></html>"
        )
    else:
        fig.savefig(out)
    plt.close(fig)
    click.echo(f"wrote {out}")


def _moving_average(values: list[float], k: int) -> list[float]:
    if k <= 1:
        return values
    out, window, total = [], [], 0.0
    for v in values:
        window.append(v)
        total += v
        if len(window) > k:
            total -= window.pop(0)
        out.append(total / len(window))
    return out
