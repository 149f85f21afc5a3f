"""Checks of a local store's folder (writable, free space) for backends' health and preflight.

A few system calls each, no store imported: cheap enough to run before every new run.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

__all__ = ["existing_parent", "free_bytes", "is_writable", "storage_problems"]


def existing_parent(path: str | os.PathLike[str]) -> Path:
    """``path`` if it exists, else its nearest existing parent (where it would be created)."""
    current = Path(path)
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def is_writable(path: str | os.PathLike[str]) -> bool:
    """True if a file can be created in ``path`` (or where it would be created): a probe, removed again."""
    folder = existing_parent(path)
    probe = folder / f".mltrack-write-probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the filesystem holding ``path`` (or where it would be created); None if unknown."""
    try:
        return shutil.disk_usage(existing_parent(path)).free
    except OSError:
        return None


def storage_problems(path: str | os.PathLike[str], *, min_free: int, what: str, fix: str) -> list[str]:
    """Why the store at ``path`` cannot take writes: not writable, or under ``min_free`` bytes free.

    ``what`` names the store in messages ("Aim repository"); ``fix`` ends them ("move it (AIM_REPO_PATH)").
    """
    target = existing_parent(path)
    problems = []
    if not is_writable(target):
        problems.append(
            f"{what} {target} is not writable (read-only filesystem or permissions): fix it or {fix}"
        )
    free = free_bytes(target)
    if free is not None and free < min_free:
        problems.append(
            f"the disk holding {target} is full ({free:,} bytes free, below {min_free:,}): free space or {fix}"
        )
    return problems
