"""Third-party plugins: a real distribution with an ``mltrack`` entry point, installed in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

from _plugin_dists import run_py


def test_installed_plugin_is_discovered_with_its_distribution_and_hooks(plugin_path: Path) -> None:
    proc = run_py(plugin_path, "from mltrack.cli import main; raise SystemExit(main(['backends', '--json']))")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (filelog,) = [p for p in data["plugins"] if p["name"] == "filelog"]
    assert filelog["distribution"] == "mltrack-filelog"
    assert filelog["version"] == "1.2.3"
    assert filelog["backends"] == ["filelog"]
    assert "mltrack_log_metrics" in filelog["hooks"]


def test_broken_plugin_is_reported_by_name_while_the_others_work(plugin_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    proc = run_py(
        plugin_path,
        """
        import mltrack
        with mltrack.start_run("plugin-test") as run:
            run.log_metric("m", 1.5, step=3)
        from mltrack.plugins import get_plugin_host
        print(sorted(get_plugin_host().load_errors))
        """,
        ML_TRACKING_BACKEND="filelog",
        ML_STORAGE_PATH=str(log),
    )
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'broken' from distribution mltrack-broken" in proc.stderr
    assert "this plugin is broken on purpose" in proc.stderr
    assert proc.stdout.strip() == "['broken']"
    hooks = [json.loads(line)["hook"] for line in log.read_text().splitlines()]
    assert hooks == ["create_run", "log_metrics", "finish_run"]


def test_selected_backend_and_observers_receive_the_writes(plugin_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    proc = run_py(
        plugin_path,
        f"""
        import mltrack, mltrack_filelog
        mltrack.configure_backend("filelog", path={str(log)!r})
        with mltrack.start_run("plugin-test") as run:
            for step in range(5):
                run.log_metric("m", float(step), step=step)
        print(sorted(mltrack_filelog.POINTS_SEEN))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.0, 1.0, 2.0, 3.0, 4.0]"
    metrics = [json.loads(line) for line in log.read_text().splitlines() if '"log_metrics"' in line]
    assert [v for m in metrics for v in m["values"]] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_the_only_persistent_backend_is_the_default(plugin_path: Path, tmp_path: Path) -> None:
    proc = run_py(
        plugin_path,
        "import mltrack.factory as f; print(f.experiment_repository().backend)",
        ML_STORAGE_PATH=str(tmp_path / "x.jsonl"),
    )
    assert proc.stdout.strip() == "filelog", proc.stderr


def test_blocked_plugin_is_not_loaded_and_the_error_lists_installed_backends(plugin_path: Path) -> None:
    proc = run_py(
        plugin_path,
        "import mltrack.factory as f; f.experiment_repository()",
        ML_TRACKING_BACKEND="filelog",
        MLTRACK_BLOCK_PLUGINS="filelog",
    )
    assert proc.returncode != 0
    assert (
        "UnknownBackendError: Unknown tracking backend 'filelog': installed backends are memory"
        in proc.stderr
    )


def test_allow_list_empty_loads_nothing_and_says_how_to_fix_it(plugin_path: Path) -> None:
    proc = run_py(
        plugin_path, "import mltrack.factory as f; f.experiment_repository()", MLTRACK_LOAD_PLUGINS=""
    )
    assert proc.returncode != 0
    assert (
        "NoBackendError: No tracking backend configured: install one (pip install mltrack-aim)" in proc.stderr
    )
    assert "ML_TRACKING_BACKEND" in proc.stderr


def test_memory_is_never_chosen_unless_named(plugin_path: Path) -> None:
    proc = run_py(
        plugin_path, "import mltrack.factory as f; f.experiment_repository()", MLTRACK_LOAD_PLUGINS="memory"
    )
    assert "No tracking backend configured" in proc.stderr
    assert "one of: memory" in proc.stderr


def test_strict_plugins_turns_a_broken_plugin_into_an_error(plugin_path: Path) -> None:
    proc = run_py(
        plugin_path, "import mltrack.factory as f; f.experiment_repository()", MLTRACK_STRICT_PLUGINS="1"
    )
    assert proc.returncode != 0
    assert "PluginLoadError: plugin 'broken' from distribution mltrack-broken failed to load" in proc.stderr


def test_trace_hooks_logs_every_hook_call(plugin_path: Path, tmp_path: Path) -> None:
    proc = run_py(
        plugin_path,
        """
        import mltrack
        with mltrack.start_run("trace") as run:
            run.log_metric("m", 1.0)
        """,
        ML_TRACKING_BACKEND="memory",
        MLTRACK_TRACE_HOOKS="1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "mltrack trace: mltrack_log_metrics(run_id=" in proc.stderr
    assert "mltrack trace: mltrack_finish_run ok in" in proc.stderr
