"""Aim repository plumbing: safe creation, the run index, and liveness of a run's writer.

Aim's readers (``Repo.iter_runs``, ``get_run``, ``query_runs``, the hparams and end time of
a read-only ``Run``) read a separate index, ``.aim/meta/index``, that no writing ``Run``
fills; only ``aim up`` and ``aim storage reindex`` do. :class:`RunIndex` fills it for the
runs whose data changed since they were last indexed, the way ``aim up`` does, retrying
while another process holds the index lock, and drops the read snapshots Aim caches, so
mltrack and every Aim reader see the same, current runs.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aimrocks.errors
from aim.sdk.repo import ContainerConfig, Repo

from mltrack.errors import BackendError

__all__ = ["RunIndex", "ensure_repo", "open_repo", "writer_state"]

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
    if location.startswith("aim://"):
        try:
            return Repo.from_path(location)
        except Exception as exc:
            raise BackendError(
                f"cannot reach the Aim server {location}: {exc}; start it with "
                f"`aim server --host <host> --port <port> --repo <path>`"
            ) from exc
    ensure_repo(location)
    return Repo.from_path(location)


def drop_read_snapshots(repo: Any, run_hashes: Iterable[str] | None = None) -> None:
    """Forget Aim's cached read-only views so the next read sees the data as it is now.

    A read-only RocksDB view is a snapshot; Aim keeps one per container until it is dropped.
    Write containers (the runs this process writes) are left alone.
    """
    pool = repo.container_pool
    wanted = None if run_hashes is None else set(run_hashes)
    for key in list(pool.keys()):
        if not key.read_only or key.name == "meta/index":
            continue
        if key.sub is None or wanted is None or key.sub in wanted:
            pool.pop(key, None)


class RunIndex:
    """Keeps Aim's run index (``.aim/meta/index``) current for the runs of one repository."""

    def __init__(self, repo: Any, *, timeout: float = 10.0) -> None:
        self.repo: Any = repo
        self.timeout = timeout
        self.remote = repo.is_remote_repo
        self.index_busy_retries = 0
        self.last_index_seconds = 0.0
        # Runs this process deleted: a server keeps listing them for a moment (its cache).
        self.deleted: set[str] = set()

    # --- what needs indexing ---------------------------------------------------------

    def all_runs(self) -> list[str]:
        """Every run in the repository, indexed or not (Aim's chunk folders)."""
        if self.remote:
            # The server caches its folder listing for 0.5 s; runs published to the index
            # (mltrack indexes each run as it is created) are known even before that.
            listed = set(self.repo._remote_repo_proxy.list_all_runs())
            self.repo.container_pool.pop(ContainerConfig("meta", None, True), None)
            index = self.repo.request_tree("meta", read_only=True)
            listed.update(index.subtree(("meta", "chunks")).keys())
            return sorted(listed - self.deleted)
        chunks = Path(self.repo.path) / "meta" / "chunks"
        try:
            return os.listdir(chunks)  # not list_all_runs(): that is cached for 0.5 s
        except FileNotFoundError:
            return []

    def _checksum(self, run_hash: str) -> str:
        # The same fingerprint as Aim's RepoIndexManager, so `aim up` and mltrack agree on
        # which runs are current and neither re-indexes what the other just did.
        digest = hashlib.md5()
        for root, _dirs, files in os.walk(os.path.join(self.repo.path, "meta", "chunks", run_hash)):
            for name in sorted(files):
                if name.startswith("LOG"):
                    continue
                path = os.path.join(root, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                digest.update(path.encode("utf-8"))
                digest.update(str(stat.st_mtime).encode("utf-8"))
                digest.update(str(stat.st_size).encode("utf-8"))
        return digest.hexdigest()

    def outdated(self, run_hashes: Iterable[str]) -> list[str]:
        """The runs whose index entry is missing or older than their data."""
        hashes = list(run_hashes)
        if not hashes:
            return []
        self.repo.container_pool.pop(ContainerConfig("meta", None, True), None)
        index = self.repo.request_tree("meta", read_only=True)
        out = []
        if self.remote:
            # A server's files cannot be fingerprinted from here: refresh every run that is
            # not indexed yet or not finished in the index (live runs change all the time).
            indexed = set(index.subtree(("meta", "chunks")).keys())
            for h in hashes:
                if h not in indexed or index.get(("meta", "chunks", h, "end_time")) is None:
                    out.append(h)
            return out
        for h in hashes:
            try:
                current = index.get(("index_cache", h))
            except Exception:  # an unreadable entry is an outdated one
                current = None
            if current != self._checksum(h):
                out.append(h)
        return out

    # --- indexing ------------------------------------------------------------------------

    def index(self, run_hashes: Iterable[str]) -> list[str]:
        """Copy the runs' metadata into the index; returns the runs that could not be indexed.

        Only one process can write the index at a time (``aim up`` indexes too), so a busy
        index is retried with backoff for up to ``timeout`` seconds.
        """
        todo = list(dict.fromkeys(run_hashes))
        if not todo:
            return []
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                todo = self._index_once(todo)
            except aimrocks.errors.RocksIOError as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    log.warning("mltrack-aim: could not index runs %s: %s", todo, exc)
                    break
                self.index_busy_retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            break
        drop_read_snapshots(self.repo)
        self.repo.container_pool.pop(ContainerConfig("meta", None, True), None)
        self.last_index_seconds = time.perf_counter() - started
        return todo

    def _index_once(self, run_hashes: list[str]) -> list[str]:
        """Index what it can while holding the index open; returns what is left (vanished runs aside)."""
        repo = self.repo
        failed: list[str] = []
        index_container: Any = None
        try:
            if self.remote:
                index = repo._get_index_tree("meta", 0).view(())
            else:
                index_container = repo._get_index_container("meta", timeout=0)
                index = index_container.tree().view(())
            for h in run_hashes:
                try:
                    self._index_run(index, h)
                except aimrocks.errors.RocksIOError as exc:
                    if "lock" in str(exc).lower() and "index" in str(exc).lower():
                        raise
                    failed.append(h)
                    log.debug("mltrack-aim: run %s not indexed: %s", h, exc)
                except (KeyError, FileNotFoundError):
                    continue  # deleted meanwhile
                except Exception as exc:
                    if not self.remote:
                        raise
                    # A server answers a run deleted a moment ago (its run listing is cached
                    # for 0.5 s) with a bare Exception whose text is Aim's failed error reply.
                    failed.append(h)
                    log.debug("mltrack-aim: run %s not indexed on the server: %s", h, exc)
        finally:
            # Release the index's write lock now, so `aim up` and other processes can index.
            repo.container_pool.pop(ContainerConfig("meta/index", None, True), None)
            if index_container is not None:
                with contextlib.suppress(Exception):
                    index_container.close()
            del index_container
        return failed

    def _index_run(self, index: Any, run_hash: str) -> None:
        repo = self.repo
        checksum = None if self.remote else self._checksum(run_hash)
        meta_tree = repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
        try:
            meta_tree.subtree("meta").subtree("chunks").subtree(run_hash).finalize(index=index)
            if checksum is not None:
                index["index_cache", run_hash] = checksum
        finally:
            repo.container_pool.pop(ContainerConfig("meta", run_hash, True), None)

    def refresh(self, run_hashes: Iterable[str] | None = None) -> list[str]:
        """Index whatever of ``run_hashes`` (default: every run) is outdated; returns the unindexed rest."""
        hashes = self.all_runs() if run_hashes is None else list(run_hashes)
        left = self.index(self.outdated(hashes))
        drop_read_snapshots(self.repo)
        return left

    def state(self) -> dict[str, Any]:
        """Runs in the repository, how many are indexed and current, and the index's health."""
        hashes = self.all_runs()
        outdated = self.outdated(hashes)
        return {
            "runs": len(hashes),
            "runs_outdated_in_index": len(outdated),
            "index_busy_retries": self.index_busy_retries,
            "index_corrupted": False if self.remote else self.repo.is_index_corrupted(),
        }


# --- liveness of a run's writer -----------------------------------------------------------


def writer_state(repo: Any, run_hash: str, grace: float) -> str:
    """``alive``, ``dead`` or ``unknown``: whether the process writing an unfinished run still runs.

    Aim's run lock (``.aim/locks/<hash>.softlock``) names the writer's machine and pid; on
    this machine the pid answers. For a writer on another machine, Aim's check-ins (written
    every few seconds while the run is open) tell: a run that missed its next check-in by
    more than ``grace`` seconds is dead.
    """
    if repo.is_remote_repo:
        return "unknown"
    lock = Path(repo.path) / "locks" / f"{run_hash}.softlock"
    try:
        content = lock.read_text()
    except FileNotFoundError:
        return "dead"  # Aim released the lock: the run was closed without being finished
    except OSError:
        return "unknown"
    try:
        machine, pid = (int(part) for part in content.split("-")[:2])
    except ValueError:
        return "unknown"
    if machine == uuid.getnode():
        return "alive" if _pid_alive(pid) else "dead"
    deadline = _checkin_deadline(Path(repo.path), run_hash)
    if deadline is None:
        return "unknown"
    return "alive" if time.time() < deadline + grace else "dead"


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return bool(psutil.pid_exists(pid))


def _checkin_deadline(aim_path: Path, run_hash: str) -> float | None:
    """When the run promised its next check-in (epoch seconds), from its newest check-in file."""
    best: float | None = None
    try:
        names = os.listdir(aim_path / "check_ins")
    except FileNotFoundError:
        return None
    for name in names:
        # <hash>-<idx>-<flag>-<epoch>-<expect_next_in>
        parts = name.split("-")
        if len(parts) != 5 or parts[0] != run_hash:
            continue
        try:
            due = float(parts[3]) + float(parts[4])
        except ValueError:
            continue
        best = due if best is None else max(best, due)
    return best
