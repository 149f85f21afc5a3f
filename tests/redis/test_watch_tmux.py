"""``mltrack watch`` in a real terminal (tmux): two runs train, both rows update, and the one
killed with SIGKILL is flagged CRASHED within 10 seconds, with the default settings."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mltrack_aim") is None, reason="needs mltrack-aim"),
]

TOTAL = 2000

TRAINER = f"""
    import sys, time
    import mltrack

    with mltrack.start_run("watched", name=sys.argv[1]) as run:
        for step in range({TOTAL}):
            run.log_metrics({{"loss": 1.0 / (step + 1), "reward": step % 10}}, step=step)
            run.progress(step + 1, {TOTAL})
            if step % 20 == 0:
                run.set_state(phase="rollout" if step % 40 else "train")
            time.sleep(0.02)
"""


class Tmux:
    """A tmux server of the test's own (its own socket), ended by the test."""

    def __init__(self) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: apt-get install -y tmux (.ci/run does)")
        self.socket = f"mltrack-watch-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "watch")

    def alive(self) -> bool:
        """True while the session runs (it ends when its command does)."""
        found = subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "watch"], capture_output=True)
        return found.returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def _row(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f"{name} (" in line), "")


def _done(row: str) -> int | None:
    match = re.search(rf"(\d+)/{TOTAL}", row)
    return int(match.group(1)) if match else None


def _wait_for(tmux: Tmux, check: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if check(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"the watch screen never showed what was expected:\n{screen}")


def test_watch_shows_two_runs_live_and_flags_a_killed_one(tmp_path: Path, redis_server: Any) -> None:
    env = {
        **os.environ,
        "MLTRACK_REDIS_URL": redis_server.url,
        "ML_TRACKING_BACKEND": "aim",
        "AIM_REPO_PATH": str(tmp_path / "aim"),
    }
    trainers = {
        name: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(TRAINER), name], env=env, stdout=subprocess.DEVNULL
        )
        for name in ("alpha", "beta")
    }
    tmux = Tmux()
    mltrack_cli = Path(sys.executable).with_name("mltrack")
    # The pane's own width, not the COLUMNS pytest may have inherited.
    command = (
        f"env -u COLUMNS -u LINES MLTRACK_REDIS_URL={redis_server.url} {mltrack_cli} watch --interval 0.5"
    )
    try:
        tmux.run("new-session", "-d", "-s", "watch", "-x", "220", "-y", "40", command)
        first = _wait_for(
            tmux, lambda s: _done(_row(s, "alpha")) is not None and _done(_row(s, "beta")) is not None, 60
        )
        before = {name: _done(_row(first, name)) for name in trainers}
        later = _wait_for(
            tmux,
            lambda s: all((_done(_row(s, n)) or 0) > (before[n] or 0) for n in trainers),
            15,
        )
        for name in trainers:  # each row: status, phase, the metrics' latest values and sparklines
            row = _row(later, name)
            assert "running" in row and "watched" in row and "loss" in row, later
            assert re.search("[▁▂▃▄▅▆▇█]{3,}", row), later

        trainers["beta"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        flagged = _wait_for(tmux, lambda s: "CRASHED" in _row(s, "beta"), 10)
        took = time.monotonic() - killed
        print(f"SIGKILLed run flagged after {took:.1f} s")
        assert took < 10
        assert "CRASHED" not in _row(flagged, "alpha") and "running" in _row(flagged, "alpha")
        alpha_then = _done(_row(flagged, "alpha")) or 0
        _wait_for(tmux, lambda s: (_done(_row(s, "alpha")) or 0) > alpha_then, 10)  # alpha still updates

        tmux.run("send-keys", "-t", "watch", "C-c")  # Ctrl-C ends the dashboard, and with it the session
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tmux.alive():
            time.sleep(0.2)
        assert not tmux.alive(), "mltrack watch did not end on Ctrl-C"
    finally:
        tmux.kill()
        for proc in trainers.values():
            proc.kill()
            proc.wait()
