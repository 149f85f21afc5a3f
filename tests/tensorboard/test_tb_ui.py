"""``mltrack ui`` on the tensorboard backend: ``tensorboard --logdir`` on 127.0.0.1, stopped with its process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mltrack.config import TrackingConfig
from mltrack.factory import build_session
from mltrack.plugins import get_plugin_host
from mltrack.servers import free_port

from _child import env_without


def _mltrack_ui(tb_dir: Path, port: int) -> subprocess.Popen[str]:
    """``mltrack ui`` on the tensorboard log folder, as a user starts it from the environment."""
    env = env_without(("ML_", "MLTRACK_"))
    env.update(ML_TRACKING_BACKEND="tensorboard", ML_STORAGE_PATH=str(tb_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "mltrack", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ui_pid(line: str) -> int:
    """The UI's process id from the command's announcement ``... (pid N; Ctrl-C to stop)``."""
    return int(line.split("(pid ")[1].split(";")[0])


def test_mltrack_ui_serves_the_log_folder_with_tensorboard(tb_config: TrackingConfig, tb_dir: Path) -> None:
    host = get_plugin_host()
    session = build_session(tb_config, lambda: host.activate(tb_config), host)
    run = session.create_run("ui", name="shown")
    session.log_metric(run, "loss", 0.5, step=1)
    session.close()

    port = free_port()
    proc = _mltrack_ui(tb_dir, port)
    ui_pid = None
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith(f"tensorboard UI: http://127.0.0.1:{port}"), line + (
            proc.stderr.read() if proc.poll() is not None else ""
        )
        ui_pid = _ui_pid(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=30) as response:
            runs = json.load(response)
        assert runs == [f"ui/shown-{run.id}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "UI stopped." in out
    deadline = time.monotonic() + 10
    while ui_pid is not None and time.monotonic() < deadline:
        try:
            os.killpg(ui_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("tensorboard's process group is still alive")


def test_sigterm_right_after_the_ui_announces_itself_stops_it_cleanly(tb_dir: Path) -> None:
    # A TERM sent the moment the URL is printed once killed the command before its handler
    # was set: no "UI stopped.", exit -15, the UI left to its guard.
    for _ in range(3):
        proc = _mltrack_ui(tb_dir, free_port())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert line.startswith("tensorboard UI: http://127.0.0.1:"), line + err
        assert (proc.returncode, out) == (0, "UI stopped.\n"), err
        ui_pid = _ui_pid(line)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui_pid, 0)
            raise AssertionError(f"tensorboard's process group {ui_pid} outlived 'UI stopped.'")
