"""Configuration, cheap import, safe repository creation, health and Aim's server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import mltrack
from mltrack.config import BackendConfig
from mltrack_aim import AimProcess, AimSettings, configure_aim_backend, start_aim_ui

from _child import popen_python, run_python


def test_importing_the_plugin_does_not_import_aim() -> None:
    got = run_python(
        """
        import json, sys
        import mltrack_aim, mltrack_aim.plugin
        from mltrack.plugins import get_plugin_host
        reg = get_plugin_host().backends()["aim"]
        print(json.dumps(dict(aim_loaded="aim" in sys.modules, oop=reg.out_of_process, persistent=reg.persistent)))
        """
    )
    assert got == {"aim_loaded": False, "oop": True, "persistent": True}


def test_repo_path_option_wins_over_aim_repo_path_over_storage_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert AimSettings.from_backend_config(BackendConfig("aim")).repo == str(tmp_path / "aim_logs")
    config = BackendConfig("aim", storage_path=str(tmp_path / "store"))
    assert AimSettings.from_backend_config(config).repo == str(tmp_path / "store")
    monkeypatch.setenv("AIM_REPO_PATH", str(tmp_path / "env"))
    assert AimSettings.from_backend_config(config).repo == str(tmp_path / "env")
    config = BackendConfig("aim", storage_path="x", options={"repo_path": "aim://127.0.0.1:53800/"})
    settings = AimSettings.from_backend_config(config)
    assert settings.is_remote and settings.repo == "aim://127.0.0.1:53800"


def test_configure_aim_backend_selects_aim_with_repo_and_experiment(tmp_path: Path) -> None:
    config = configure_aim_backend(repo_path=tmp_path / "exps", experiment_name="My_Trading_Bot")
    assert config.backends == ("aim",)
    assert config.experiment_name == "My_Trading_Bot"
    assert config.backend_options["aim"]["repo_path"] == str(tmp_path / "exps")


def test_new_repository_is_created_on_first_use(tmp_path: Path) -> None:
    configure_aim_backend(repo_path=tmp_path / "new")
    with mltrack.start_run("first") as run:
        run.log_metric("loss", 1.0, step=0)
    assert (tmp_path / "new" / ".aim" / "VERSION").exists()
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.startswith(".mltrack-aim-init")]


def test_process_killed_while_creating_the_repository_leaves_no_half_made_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for delay in (0.3, 0.8, 1.5):
        child = popen_python(
            f"""
            from mltrack_aim.store import ensure_repo
            print("start", flush=True)
            ensure_repo({str(root)!r})
            """
        )
        assert child.stdout is not None and child.stdout.readline().startswith("start")
        time.sleep(delay)
        child.kill()
        child.communicate()
        aim_dir = root / ".aim"
        assert not aim_dir.exists() or (aim_dir / "VERSION").exists(), f"half-made after {delay} s"
    configure_aim_backend(repo_path=root)
    with mltrack.start_run("after-kill") as run:
        run.log_metric("loss", 1.0, step=0)
    assert mltrack.factory.experiment_repository().get_experiment_sync(run.id).status.value == "completed"


def test_half_made_repository_without_runs_is_set_aside_and_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mltrack_aim.store as store

    monkeypatch.setattr(store, "_VERSION_WAIT", 0.1)
    (tmp_path / ".aim" / "meta").mkdir(parents=True)  # what a crash during `aim init` leaves
    store.ensure_repo(str(tmp_path))
    assert (tmp_path / ".aim" / "VERSION").exists()
    assert [p.name.startswith(".aim.broken-") for p in tmp_path.iterdir()].count(True) == 1


def test_health_reports_an_unreachable_server_without_raising(tmp_path: Path, aim_server: AimProcess) -> None:
    from mltrack_aim.backend import AimBackend

    backend = AimBackend.from_config(
        BackendConfig("aim", options={"repo_path": aim_server.address, "artifacts_dir": str(tmp_path)})
    )
    assert backend.mltrack_health().details["server_reachable"] is True
    backend.settings = AimSettings(repo="aim://127.0.0.1:9", experiment_name="x", artifacts_dir=str(tmp_path))
    health = backend.mltrack_health()
    assert not health.is_healthy
    assert "does not answer" in health.issues[0]


def test_stopping_aim_up_stops_its_uvicorn_children(aim_repo: Path) -> None:
    ui = start_aim_ui(aim_repo)
    try:
        children = psutil.Process(ui.pid).children(recursive=True)
        assert children, "aim up runs its web server in child processes"
    finally:
        ui.stop()
    time.sleep(0.5)
    alive = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive
    with pytest.raises(ProcessLookupError):
        os.killpg(ui.pid, signal.SIGTERM)


def test_aim_cli_sees_runs_written_through_mltrack(aim_repo: Path) -> None:
    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("cli") as run:
        run.log_metric("loss", 1.0, step=0)
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from aim.cli.cli import cli_entry_point; cli_entry_point()",
            "runs",
            "--repo",
            str(aim_repo),
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.id in listed.stdout + listed.stderr
