"""Every ``mltrack`` command, through the installed entry point, on a real Aim repository."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from _child import env_without

pytest.importorskip("mltrack_aim")


def test_ls_lists_every_run_newest_first_with_final_metrics(cli, runs) -> None:
    proc = cli("ls")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["id", "name", "experiment", "status", "started", "duration"]
    assert [ln.split()[0] for ln in lines[1:]] == [runs.dqn[:8], runs.ppo_slow[:8], runs.ppo_fast[:8]]
    assert "failed" in lines[1]
    assert "reward" in lines[0]
    assert "200" in lines[3]


def test_ls_filters_and_sorts_and_prints_json(cli, runs) -> None:
    data = json.loads(cli("ls", "--status", "completed", "--sort", "reward", "--json").stdout)
    assert [r["id"] for r in data] == [runs.ppo_fast, runs.ppo_slow]
    assert data[0]["config"] == {"learning_rate": 0.001, "gamma": 0.99}
    assert data[0]["final_metrics"]["reward"] == 200.0
    assert [r["id"] for r in json.loads(cli("ls", "--name", "dqn-cartpole", "--json").stdout)] == [runs.dqn]
    assert len(json.loads(cli("ls", "--tag", "baseline", "--limit", "1", "--json").stdout)) == 1
    best_loss = json.loads(cli("ls", "--sort", "loss", "--json").stdout)
    assert best_loss[0]["final_metrics"]["loss"] == pytest.approx(0.01)


def test_show_prints_config_metric_statistics_and_artifacts(cli, runs) -> None:
    proc = cli("show", runs.ppo_fast[:6])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"run {runs.ppo_fast}" in out
    assert "status: completed" in out
    assert "learning_rate = 0.001" in out
    row = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["reward"] and "=" not in ln)
    assert row == ["reward", "100", "0", "200", "0", "200", "990"]
    art = next(ln for ln in out.splitlines() if "best_model.zip" in ln)
    assert "model" in art
    assert "6.8 KB" in art


def test_show_json_has_the_same_content(cli, runs) -> None:
    data = json.loads(cli("show", runs.ppo_slow, "--json").stdout)
    loss = next(m for m in data["metrics"] if m["metric"] == "loss")
    assert loss["count"] == 100
    assert loss["first"] == pytest.approx(200 / 150)
    assert loss["min"] == pytest.approx(200 / 150 / 100)
    (artifact,) = data["artifacts"]
    assert artifact["metadata"] == {"score": 150.0}
    assert Path(artifact["path"]).read_bytes() == b"weights" * 1000


def test_compare_shows_differing_params_final_metrics_and_the_best_run(cli, runs) -> None:
    proc = cli("compare", runs.ppo_fast[:8], runs.ppo_slow[:8], "--metric", "reward")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lr_row = next(ln.split() for ln in out.splitlines() if ln.strip().startswith("learning_rate"))
    assert lr_row == ["learning_rate", "0.001", "0.0003"]
    assert "gamma" not in out  # equal in both runs
    assert f"best by reward: ppo-cartpole ({runs.ppo_fast[:8]})" in out
    data = json.loads(cli("compare", runs.ppo_fast, runs.ppo_slow, "--json").stdout)
    assert data["best"] == {"reward": runs.ppo_fast, "loss": runs.ppo_fast}
    assert data["differing_params"] == {"learning_rate": {runs.ppo_fast: 0.001, runs.ppo_slow: 0.0003}}


def test_export_csv_round_trips_the_stored_history(cli, runs, tmp_path: Path) -> None:
    out = tmp_path / "metrics.csv"
    proc = cli("export", runs.ppo_fast, runs.dqn, "--format", "csv", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "exported 201 points of 2 run(s)" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    reward = [
        (int(r["step"]), float(r["value"]))
        for r in rows
        if r["run_id"] == runs.ppo_fast and r["metric"] == "reward"
    ]
    assert reward == [(s * 10, 200.0 * s / 99) for s in range(100)]
    summaries = list(csv.DictReader((tmp_path / "metrics.runs.csv").open()))
    assert [s["status"] for s in summaries] == ["completed", "failed"]


def test_export_json_and_parquet(cli, runs, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert cli("export", runs.ppo_slow, "--format", "json", "--out", str(out)).returncode == 0
    data = json.loads(out.read_text())
    assert data["runs"][0]["id"] == runs.ppo_slow
    assert {m["metric"] for m in data["metrics"]} == {"reward", "loss"}
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "m.parquet"
    assert cli("export", runs.ppo_slow, "--format", "parquet", "--out", str(out)).returncode == 0
    table = pq.read_table(out).to_pydict()
    assert len(table["value"]) == 200


def test_plot_writes_a_png_with_one_line_per_run(cli, runs, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = tmp_path / "reward.png"
    proc = cli("plot", runs.ppo_fast, runs.ppo_slow, "--metric", "reward", "--smooth", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    image = Image.open(out).convert("RGB")
    assert image.size == (900, 500)
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None
    assert len(colours) > 10, "the image is blank"
    # matplotlib's first two line colours (tab:blue, tab:orange): one per run
    line_colours = {(31, 119, 180), (255, 127, 14)}
    counts = {c: n for n, c in colours if c in line_colours}
    assert set(counts) == line_colours
    assert all(n > 300 for n in counts.values())


def test_rm_asks_for_confirmation_then_deletes(cli, runs, tmp_path: Path) -> None:
    import mltrack

    mltrack.configure_backend("aim", repo_path=str(runs.repo))
    with mltrack.start_run("scratch") as run:
        run.log_metric("m", 1.0)
    from mltrack import factory

    factory.reset()
    proc = cli("rm", run.id, input="n\n")
    assert proc.returncode == 1
    assert "Delete 1 run(s): scratch" in proc.stderr
    assert run.id in cli("ls", "--json").stdout
    proc = cli("rm", run.id, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert run.id not in cli("ls", "--json").stdout


def test_unknown_run_is_an_error_with_what_to_do(cli) -> None:
    proc = cli("show", "ffffffffff")
    assert proc.returncode == 1
    assert "no run 'ffffffffff'" in proc.stderr
    assert "mltrack ls" in proc.stderr


def test_missing_argument_is_a_usage_error(cli) -> None:
    proc = cli("plot", "abc")
    assert proc.returncode == 2
    assert "--metric" in proc.stderr


def test_every_command_has_help_with_an_example(cli) -> None:
    for command in ("ls", "show", "compare", "export", "plot", "ui", "rm", "backends", "health"):
        proc = cli(command, "--help")
        assert proc.returncode == 0
        assert "Example: mltrack " + command in proc.stdout


def test_health_and_backends_on_aim(cli) -> None:
    proc = cli("health")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend: aim  healthy" in proc.stdout
    proc = cli("backends")
    assert "backends: aim" in proc.stdout


def test_ui_starts_aims_ui_on_loopback_and_stops_it_with_its_children(runs) -> None:
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    from mltrack_aim.processes import free_port

    from _cli_helpers import MLTRACK

    env = env_without(("ML_", "MLTRACK_", "AIM_"))
    env.update(ML_TRACKING_BACKEND="aim", AIM_REPO_PATH=str(runs.repo))
    port = free_port()
    proc = subprocess.Popen(
        [MLTRACK, "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"aim UI: http://127.0.0.1:{port}"), (
            line + proc.stderr.read() if proc.poll() else line
        )
        ui_pid = int(line.split("(pid ")[1].split(";")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/experiments/", timeout=30) as response:
            experiments = {e["name"] for e in __import__("json").load(response)}
        assert {"ppo-cartpole", "dqn-cartpole"} <= experiments
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "UI stopped." in out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(ui_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("aim up's process group is still alive")
