"""Where the TensorBoard backend writes: one log folder holding ``<experiment>/<run name>-<id>`` run folders.

The folder comes from, in order: the ``logdir`` backend option (``configure_tensorboard_backend``),
mltrack's ``storage_path`` (``ML_STORAGE_PATH``), else ``./tb_logs``. This module imports
nothing of tensorboard, so ``import mltrack_tensorboard`` stays cheap.
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
    storage_path_setting,
)
from mltrack.errors import BackendError, StoreNotFoundError
from mltrack.storage import storage_problems as local_problems

__all__ = [
    "DEFAULT_LOGDIR",
    "MIN_FREE_BYTES",
    "REFUSE_BELOW_BYTES",
    "TensorboardOptions",
    "TensorboardSettings",
    "configure_tensorboard_backend",
    "preflight",
    "storage_problems",
]

DEFAULT_LOGDIR = "./tb_logs"
MIN_FREE_BYTES = 16 * 2**20
"""Below this, health reports the disk full."""
REFUSE_BELOW_BYTES = 2**20
"""Below this, a new run is refused before it starts."""


@attrs.frozen(kw_only=True)
class TensorboardOptions:
    """The options of the ``tensorboard`` backend: ``configure_tensorboard_backend(...)``,
    ``configure_backend("tensorboard", ...)``, ``mltrack copy --to-option logdir=...``."""

    logdir: str | None = attrs.field(
        default=None,
        metadata={"help": "the log folder TensorBoard reads (default: ML_STORAGE_PATH, else ./tb_logs)"},
    )


@attrs.frozen
class TensorboardSettings:
    """The resolved settings of one TensorBoard backend."""

    logdir: Path
    """The log folder: ``tensorboard --logdir`` points here."""
    experiment_name: str
    source: str = "ML_STORAGE_PATH"
    """The setting the folder came from, named in error messages."""
    must_exist: bool = False
    """Open an existing folder only (for reading): never create one."""

    @classmethod
    def from_backend_config(cls, config: BackendConfig) -> TensorboardSettings:
        """Resolve the settings mltrack hands to the ``tensorboard`` backend factory."""
        options = parse_backend_options("tensorboard", TensorboardOptions, config.options)
        if options.logdir:
            raw, source = options.logdir, "the logdir option"
        elif config.storage_path:
            raw, source = config.storage_path, storage_path_setting(config.storage_path)
        else:
            raw, source = DEFAULT_LOGDIR, "the default: set ML_STORAGE_PATH to choose another"
        return cls(
            logdir=Path(raw).expanduser().resolve(),
            experiment_name=config.experiment_name,
            source=source,
            must_exist=config.must_exist,
        )


def configure_tensorboard_backend(
    logdir: str | os.PathLike[str] | None = None, experiment_name: str | None = None, **options: Any
) -> TrackingConfig:
    """Use TensorBoard event files for tracking: ``configure_tensorboard_backend(logdir="./runs")``.

    Runs go to ``<logdir>/<experiment>/<run name>-<id>``; ``tensorboard --logdir <logdir>`` (or
    ``mltrack ui``) shows them. ``logdir`` defaults to ``ML_STORAGE_PATH``, else ``./tb_logs``.
    """
    if logdir is not None:
        options["logdir"] = os.fspath(logdir)
    if experiment_name is not None:
        options["experiment_name"] = experiment_name
    return configure_backend("tensorboard", **options)


def storage_problems(
    logdir: Path, min_free: int = MIN_FREE_BYTES, setting: str = "ML_STORAGE_PATH"
) -> list[str]:
    """Why the log folder cannot take writes (not a folder, not writable, disk full), each with its fix."""
    fix = f"move the log folder ({setting})"
    if logdir.exists() and not logdir.is_dir():
        return [f"TensorBoard log folder {logdir} is a file, not a folder: remove it or {fix}"]
    parent = logdir
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        return [f"TensorBoard log folder {logdir} cannot be created: {parent} is a file; {fix}"]
    return local_problems(logdir, min_free=min_free, what="TensorBoard log folder", fix=fix)


def require_logdir(settings: TensorboardSettings) -> None:
    """Raise :class:`StoreNotFoundError` unless the log folder exists (reading creates none)."""
    if not settings.logdir.is_dir():
        raise StoreNotFoundError(
            f"no TensorBoard log folder at {settings.logdir} ({settings.source}): "
            "check the path, or write a run there first"
        )


def preflight(config: BackendConfig) -> None:
    """Raise :class:`BackendError` if the log folder cannot take a new run (a few system calls)."""
    settings = TensorboardSettings.from_backend_config(config)
    problems = storage_problems(settings.logdir, min_free=REFUSE_BELOW_BYTES, setting=settings.source)
    if problems:
        raise BackendError("; ".join(problems))
