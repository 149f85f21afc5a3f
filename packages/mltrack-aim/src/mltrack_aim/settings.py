"""Where the Aim backend stores data: a local repository path or an ``aim://host:port`` server.

Resolved from, in order: the ``repo_path`` backend option (``configure_aim_backend``),
``AIM_REPO_PATH``, mltrack's ``storage_path`` (``ML_STORAGE_PATH``), else ``./aim_logs``.
This module does not import aim, so ``import mltrack_aim`` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from mltrack.config import (
    BackendConfig,
    TrackingConfig,
    configure_backend,
    parse_backend_options,
    store_location,
)
from mltrack.errors import BackendError, StoreNotFoundError
from mltrack.storage import is_writable
from mltrack.storage import storage_problems as local_problems

__all__ = [
    "DEFAULT_REPO_PATH",
    "MIN_FREE_BYTES",
    "REFUSE_BELOW_BYTES",
    "REMOTE_SCHEME",
    "AimOptions",
    "AimSettings",
    "configure_aim_backend",
    "is_writable",
    "preflight",
    "require_repo",
    "storage_problems",
]

DEFAULT_REPO_PATH = "./aim_logs"
REMOTE_SCHEME = "aim://"
MIN_FREE_BYTES = 16 * 2**20
"""Below this much free space health_check() warns: RocksDB's next flush or compaction may fail."""
REFUSE_BELOW_BYTES = 2**20
"""Below this much free space a new run is refused: the disk is full, the run would be lost."""


@attrs.frozen(kw_only=True)
class AimOptions:
    """The options of the ``aim`` backend: ``configure_aim_backend(...)``,
    ``configure_backend("aim", ...)``, ``mltrack copy --to-option KEY=VALUE``.

    Declared at ``register("aim", ..., options=AimOptions)``, so a mistyped one is an error.
    """

    repo_path: str | None = attrs.field(
        default=None, metadata={"help": "folder holding .aim, or aim://host:port (default: AIM_REPO_PATH)"}
    )
    artifacts_dir: str | None = attrs.field(
        default=None, metadata={"help": "folder for artifact copies (default: <repository>/aim_artifacts)"}
    )
    index_timeout: float = attrs.field(
        default=10.0, metadata={"help": "seconds to wait for Aim's index lock held by another process"}
    )
    crash_grace: float = attrs.field(
        default=45.0, metadata={"help": "seconds past a missed check-in before a remote run reads CRASHED"}
    )


@attrs.frozen
class AimSettings:
    """The resolved settings of one Aim backend."""

    repo: str
    """An absolute local path (the folder holding ``.aim``) or ``aim://host:port``."""
    experiment_name: str
    artifacts_dir: str
    """Local folder receiving artifact copies (Aim's ``file://`` artifact storage)."""
    index_timeout: float = 10.0
    """Seconds to keep retrying when another process (``aim up``) holds Aim's index lock."""
    crash_grace: float = 45.0
    """Seconds past a missed Aim check-in before a run on another host reads as CRASHED."""
    source: str = "AIM_REPO_PATH"
    """The setting ``repo`` came from, named in error messages so the user fixes that one."""
    must_exist: bool = False
    """Open an existing repository only (for reading): never create one."""

    @property
    def is_remote(self) -> bool:
        """True for an ``aim://`` server."""
        return self.repo.startswith(REMOTE_SCHEME)

    @property
    def server_address(self) -> str:
        """``host:port`` of the remote server (empty for a local repository)."""
        return self.repo[len(REMOTE_SCHEME) :] if self.is_remote else ""

    @classmethod
    def from_backend_config(cls, config: BackendConfig) -> AimSettings:
        """Resolve the settings mltrack hands to the ``aim`` backend factory."""
        options = parse_backend_options("aim", AimOptions, config.options)
        raw, source = _location(options, config.storage_path)
        if raw.startswith(REMOTE_SCHEME):
            repo = raw.rstrip("/")
            # A server's files are not ours to write: artifact copies stay on this machine.
            default_artifacts = Path(config.storage_path or DEFAULT_REPO_PATH)
            if str(default_artifacts).startswith(REMOTE_SCHEME):
                default_artifacts = Path(DEFAULT_REPO_PATH)
            artifacts = Path(options.artifacts_dir or default_artifacts / "aim_artifacts")
        else:
            repo = str(Path(raw).expanduser().resolve())
            artifacts = Path(options.artifacts_dir or Path(repo) / "aim_artifacts")
        return cls(
            repo=repo,
            experiment_name=config.experiment_name,
            artifacts_dir=str(artifacts.expanduser().resolve()),
            index_timeout=options.index_timeout,
            crash_grace=options.crash_grace,
            source=source,
            must_exist=config.must_exist,
        )


def _location(options: AimOptions, storage_path: str | None) -> tuple[str, str]:
    """Where the repository is, and the setting that said so (in the order of precedence)."""
    return store_location(options.repo_path, "repo_path", "AIM_REPO_PATH", storage_path, DEFAULT_REPO_PATH)


def configure_aim_backend(
    repo_path: str | os.PathLike[str] | None = None,
    experiment_name: str | None = None,
    **options: Any,
) -> TrackingConfig:
    """Use Aim for tracking: ``configure_aim_backend(repo_path="./my_experiments")``.

    ``repo_path`` is a folder (the Aim repository is ``<repo_path>/.aim``, created on first
    use) or ``aim://host:port`` for a remote ``aim server``; by default ``AIM_REPO_PATH``,
    else ``ML_STORAGE_PATH``, else ``./aim_logs``. ``experiment_name`` is the default
    experiment of new runs (``ML_EXPERIMENT_NAME``). Other options: ``artifacts_dir``,
    ``index_timeout``, ``crash_grace`` (see :class:`AimOptions`); an unknown or ill-typed one
    raises :class:`mltrack.errors.ConfigurationError` listing the valid ones.
    """
    if repo_path is not None:
        options["repo_path"] = os.fspath(repo_path)
    if experiment_name is not None:
        options["experiment_name"] = experiment_name
    return configure_backend("aim", **options)


def storage_problems(
    repo: str | os.PathLike[str], min_free: int = MIN_FREE_BYTES, setting: str = "AIM_REPO_PATH"
) -> list[str]:
    """What keeps the local repository folder ``repo`` from taking writes: not writable, disk full.

    Checks the folder holding ``.aim`` (or, before the repository exists, the nearest existing
    parent it would be created in) with a write probe and the free space (``min_free`` bytes
    at least). A few system calls: cheap enough to run before every new run. ``setting`` is
    the one the user chose the repository with (:attr:`AimSettings.source`), named in the fix.
    """
    aim_dir = Path(repo) / ".aim"
    target = aim_dir if aim_dir.is_dir() else Path(repo)
    what = "Aim repository" if target == aim_dir else "folder"
    return local_problems(target, min_free=min_free, what=what, fix=f"move the repository ({setting})")


def require_repo(settings: AimSettings) -> None:
    """Raise :class:`StoreNotFoundError` unless the local repository exists (reading creates none).

    A few system calls, no aim import; an ``aim://`` server is not probed (its errors say so).
    """
    if settings.is_remote:
        return
    try:
        found = (Path(settings.repo) / ".aim").is_dir()
    except OSError as exc:  # e.g. a folder the user may not enter
        raise BackendError(
            f"cannot read the Aim repository {settings.repo} ({settings.source}): "
            f"{exc.strerror or exc}: fix its permissions or point {settings.source} elsewhere"
        ) from exc
    if not found:
        raise StoreNotFoundError(
            f"no Aim repository at {settings.repo} ({settings.source}): "
            "check the path, or write a run there first"
        )


def preflight(config: BackendConfig) -> None:
    """Raise :class:`BackendError` if the configured local repository cannot take a new run.

    Runs in the training process before every ``create_run`` (so it never imports aim); an
    ``aim://`` server is not probed here: its faults are retried and counted by the writer.
    """
    settings = AimSettings.from_backend_config(config)
    if settings.is_remote:
        return
    problems = storage_problems(settings.repo, min_free=REFUSE_BELOW_BYTES, setting=settings.source)
    if problems:
        raise BackendError("; ".join(problems))
