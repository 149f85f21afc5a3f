"""Opening an Aim repository: safe creation (never half-made) and ``aim://`` servers.

Only Aim's public ``Repo`` is used here; the run index, read snapshots and writer liveness
(Aim internals) live in :mod:`mltrack_aim.internals`.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from aim.sdk.repo import Repo

from mltrack.errors import BackendError
from mltrack_aim import internals

__all__ = ["ensure_repo", "open_repo"]

log = logging.getLogger("mltrack.aim")

AIM_DIR = ".aim"
_VERSION_WAIT = 30.0  # seconds: a plain `aim init` elsewhere may be mid-way (it takes 3-7 s)


def ensure_repo(root: str) -> None:
    """Create the Aim repository ``<root>/.aim`` unless it exists; never leave it half-made.

    Aim's own ``init`` writes ``VERSION`` last, after a database migration of a few seconds;
    a process killed before that leaves a repository every later ``Run()`` rejects. So the
    repository is built in a temporary folder beside it and renamed into place, which is
    atomic: ``.aim`` either does not exist or is complete.
    """
    aim_dir = Path(root) / AIM_DIR
    if (aim_dir / "VERSION").exists():
        return
    if aim_dir.exists():
        _repair_half_made(aim_dir)
        if (aim_dir / "VERSION").exists():
            return
    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mltrack-aim-init-", dir=root))
    try:
        repo: Any = Repo(str(staging), init=True)
        repo.close()
        del repo
        gc.collect()
        try:
            os.rename(staging / AIM_DIR, aim_dir)
        except OSError:
            if not (aim_dir / "VERSION").exists():  # lost a race to a complete repository: fine
                raise
    except Exception as exc:
        raise BackendError(
            f"could not create the Aim repository {aim_dir}: {exc}; check that {root} is writable"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _repair_half_made(aim_dir: Path) -> None:
    """Wait for a repository another process is creating; set aside one a crash left half-made."""
    deadline = time.monotonic() + _VERSION_WAIT
    while time.monotonic() < deadline:
        if (aim_dir / "VERSION").exists():
            return
        time.sleep(0.25)
    chunks = aim_dir / "meta" / "chunks"
    if chunks.is_dir() and any(chunks.iterdir()):
        raise BackendError(
            f"the Aim repository {aim_dir} has runs but no VERSION file (its creation was interrupted): "
            f"run `aim init --repo {aim_dir.parent}` to finish it, or move it away"
        )
    aside = aim_dir.with_name(f"{AIM_DIR}.broken-{int(time.time())}")
    log.warning("mltrack-aim: %s was left half-made by a crash; moved it to %s", aim_dir, aside)
    os.rename(aim_dir, aside)


def open_repo(location: str) -> Any:
    """The Aim ``Repo`` for a local folder (created if missing) or an ``aim://`` server."""
    internals.guard_exit_cleanup()
    if location.startswith("aim://"):
        try:
            repo = Repo.from_path(location)
            internals.watch_remote(repo)
            return repo
        except Exception as exc:
            raise BackendError(
                f"cannot reach the Aim server {location}: {exc}; start it with "
                f"`aim server --host <host> --port <port> --repo <path>`"
            ) from exc
    ensure_repo(location)
    return Repo.from_path(location)
