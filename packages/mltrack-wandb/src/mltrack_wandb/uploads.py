"""Uploads of finished runs (``WANDB_MODE=online``): ``wandb sync`` in the background, bounded in time.

Each upload is a ``wandb sync <run folder>`` process in a process group of its own, so
training and ``finish_run`` never wait for W&B's service, and one that stalls can be stopped
whole. Ended uploads are counted, done or failed; :meth:`Uploads.wait` gives the rest a
deadline, then stops them (counted failed); the run folders stay for a later ``wandb sync``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

__all__ = ["Uploads"]


@attrs.define
class _Upload:
    run_id: str
    process: subprocess.Popen[bytes]


@attrs.define
class Uploads:
    """The uploads one backend started: running, done, and what failed (as sentences)."""

    cwd: Path
    """Where ``wandb sync`` runs: its own logs go to ``<cwd>/wandb``, beside the runs."""
    running: list[_Upload] = attrs.field(factory=list)
    done: int = 0
    failures: list[str] = attrs.field(factory=list)

    def start(self, run_id: str, folder: Path) -> None:
        """``wandb sync <folder>``, its output in ``<folder>/logs/mltrack-sync.log``."""
        self.reap()
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / "mltrack-sync.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "wandb", "sync", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.running.append(_Upload(run_id, process))

    def reap(self) -> None:
        """Count the uploads that ended: done, or failed with W&B's exit code."""
        still = []
        for upload in self.running:
            code = upload.process.poll()
            if code is None:
                still.append(upload)
            elif code == 0:
                self.done += 1
            else:
                self.failures.append(f"upload of run {upload.run_id} failed (wandb sync exit code {code})")
        self.running = still

    def stop(self, reason: str) -> None:
        """Kill every running upload's process group; each counts as failed for ``reason``."""
        for upload in self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(upload.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                upload.process.wait(timeout=5)
            self.failures.append(f"upload of run {upload.run_id} {reason}")
        self.running = []

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running uploads, then stop the rest.

        True if every upload ended by itself.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if not self.running:
                return True
            if time.monotonic() >= deadline:
                self.stop(f"stopped after {timeout:g} s (MLTRACK_WANDB_TIMEOUT)")
                return False
            time.sleep(0.05)
