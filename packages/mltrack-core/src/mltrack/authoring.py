"""Helpers for backend authors: the parts every backend would otherwise write for itself.

* :class:`StoreDirectory`: where a backend's store folder is (its own option, its own
  environment variable, ``ML_STORAGE_PATH``, a default: the precedence every backend of
  mltrack uses), created on demand, checked before a run (``preflight``) and in health.
* :func:`check_artifact_name` and :func:`artifact_path`: the one rule for artifact names
  (mltrack enforces it before a backend sees the name) and where a name is stored in a folder.
* :class:`SeriesBuilder`: metric histories as the read hooks return them (one series per
  name and context, sorted by step, a repeated step keeping the point stored last), from
  points in the order a store holds them.
* :class:`WriterRecord` and :func:`run_status`: crash detection. Store who writes a run when
  it is created; a RUNNING run whose writer process is gone reads CRASHED.
* :func:`health_status`: a ``HealthStatus`` whose detail keys are plain (``root``, not
  ``jsonl.root``): mltrack adds the backend's name once when it reports them.

The module imports only the standard library and mltrack's light core modules, so a plugin
module (imported by every process that uses mltrack) may use it freely.
``docs/plugins/`` shows them in a complete backend.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from mltrack.config import BackendConfig, store_location
from mltrack.errors import ArtifactError, BackendError, InvalidNameError, StoreNotFoundError
from mltrack.models import MAX_NAME_LENGTH, ExperimentStatus, HealthStatus, MetricSeries, validate_name
from mltrack.storage import free_bytes, is_writable, storage_problems

__all__ = [
    "MAX_ARTIFACT_NAME_LENGTH",
    "MAX_ARTIFACT_PART_BYTES",
    "MIN_FREE_BYTES",
    "SeriesBuilder",
    "StoreDirectory",
    "WriterRecord",
    "artifact_path",
    "check_artifact_name",
    "health_status",
    "plain_detail_keys",
    "run_status",
]

MIN_FREE_BYTES = 2**20
"""Below this many free bytes, :meth:`StoreDirectory.problems` reports the disk full."""


# --- storage path -------------------------------------------------------------------------


@attrs.frozen
class StoreDirectory:
    """A backend's store folder and the setting that chose it (named in every error about it)."""

    path: Path
    setting: str
    """Where the location came from (``ML_STORAGE_PATH``, ``the root option``, the default)."""
    must_exist: bool = False
    """Open an existing store only (for reading): :meth:`open` never creates the folder."""

    @classmethod
    def resolve(
        cls,
        config: BackendConfig,
        default: str,
        *,
        option: str | None = None,
        option_name: str = "",
        env_var: str | None = None,
    ) -> StoreDirectory:
        """The store folder for ``config``: ``option`` (the backend's own option, named
        ``option_name`` in errors), then ``env_var`` (only a variable of
        :data:`mltrack.settings.SETTINGS`; third-party backends pass None), then
        ``config.storage_path`` (``ML_STORAGE_PATH``), then ``default``.

        See :func:`mltrack.config.store_location`, which every mltrack backend follows.
        """
        where, setting = store_location(option, option_name, env_var, config.storage_path, default)
        return cls(Path(where).expanduser().absolute(), setting, config.must_exist)

    def open(self) -> Path:
        """The folder, created if missing; for a reader (``must_exist``) it must exist already.

        Raises :class:`StoreNotFoundError` (reader, no folder) or :class:`BackendError` (it
        cannot be created), each naming the path and the setting to change.
        """
        if self.must_exist:
            if not self.path.is_dir():
                raise StoreNotFoundError(
                    f"no store at {self.path} ({self.setting}): check the path, or write a run there first"
                )
            return self.path
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"cannot create the store folder {self.path} ({self.setting}): {exc.strerror or exc}: "
                f"fix its permissions or choose another folder with {self.setting}"
            ) from exc
        return self.path

    def problems(self, min_free: int = MIN_FREE_BYTES) -> list[str]:
        """Why the folder cannot take a new run (not a folder, not writable, disk full); empty if it can.

        A few system calls and no store import: cheap enough for a ``preflight`` check.
        """
        fix = f"choose another folder with {self.setting}"
        if self.path.exists() and not self.path.is_dir():
            return [f"store folder {self.path} is a file, not a folder: {fix}"]
        return storage_problems(self.path, min_free=min_free, what="store folder", fix=fix)

    def preflight(self) -> None:
        """Raise :class:`BackendError` listing :meth:`problems`, if any (a backend's ``preflight=``)."""
        problems = self.problems()
        if problems:
            raise BackendError("; ".join(problems))

    def health(self, backend: str, **details: Any) -> HealthStatus:
        """The folder's health: :meth:`problems` as issues; ``root``, ``writable``, ``free_bytes``
        and ``details`` as details."""
        return health_status(
            backend,
            self.problems(),
            root=str(self.path),
            writable=is_writable(self.path),
            free_bytes=free_bytes(self.path),
            **details,
        )


# --- artifact names -----------------------------------------------------------------------

MAX_ARTIFACT_NAME_LENGTH = MAX_NAME_LENGTH
"""Longest artifact name, in characters (the limit of every name mltrack stores)."""

MAX_ARTIFACT_PART_BYTES = 255
"""Longest part of an artifact name (a file or folder name), in bytes of the file system's
encoding: the limit of ext4, XFS, Btrfs, APFS and tmpfs (``NAME_MAX``). 255 characters of
``é`` are 510 bytes in UTF-8, so a name can be short enough as text and too long as a file."""


def check_artifact_name(name: object) -> str:
    """Return ``name`` if it is a valid artifact name, else raise with the fix.

    The rule: 1 to :data:`MAX_ARTIFACT_NAME_LENGTH` printable characters (any script), a
    relative path whose folders are separated by ``/`` (``models/best.zip``), with no
    leading ``/`` or ``\\``, no empty, ``.`` or ``..`` part, and no ``:`` in the first part
    (a drive or a URL scheme). ``\\`` separates parts too, as on Windows. So a name can never
    reach outside the run's artifact folder. Each part must be storable as a file name: at
    most :data:`MAX_ARTIFACT_PART_BYTES` bytes once encoded for the file system, and
    encodable at all. Raises :class:`mltrack.errors.InvalidNameError` (empty, too long, not
    printable, not storable as a file name) or :class:`mltrack.errors.ArtifactError` (not a
    relative path inside the run). ``log_artifact`` applies this rule before any backend sees
    the name, so a name no store can keep fails in the caller, not later in the writer.
    """
    checked = validate_name(name, "artifact name")
    parts = checked.replace("\\", "/").split("/")
    if checked.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ArtifactError(
            f"artifact name {checked!r} must be a relative path inside the run's artifacts "
            "(no leading '/', no '..' or empty parts), e.g. 'models/best_model.zip'"
        )
    for part in parts:
        try:
            size = len(os.fsencode(part))
        except UnicodeEncodeError:
            raise InvalidNameError(
                f"artifact name {checked!r:.80} cannot be a file name here: the file system's "
                f"encoding ({sys.getfilesystemencoding()}) has no bytes for {part!r:.40}; "
                "use characters it can store (or run Python in UTF-8 mode: PYTHONUTF8=1)"
            ) from None
        if size > MAX_ARTIFACT_PART_BYTES:
            raise InvalidNameError(
                f"artifact name part {part[:20]!r}... is {size} bytes as a file name, more than the "
                f"{MAX_ARTIFACT_PART_BYTES} a file system stores: shorten it (non-ASCII characters "
                "take 2-4 bytes each), or split it into folders with '/'"
            )
    return checked


def artifact_path(folder: str | os.PathLike[str], name: str) -> Path:
    """Where artifact ``name`` is stored under ``folder``: one subfolder per ``/`` (or ``\\``) part.

    The name is checked first (:func:`check_artifact_name`), so the path stays inside ``folder``.
    """
    return Path(folder).joinpath(*check_artifact_name(name).replace("\\", "/").split("/"))


# --- metric histories ------------------------------------------------------------------------


class SeriesBuilder:
    """Builds the answer of ``mltrack_get_metrics`` from points in the order a store holds them.

    :meth:`add` each stored group of points, oldest first (steps in any order, a step logged
    again included); :meth:`series` returns one :class:`MetricSeries` per (name, context),
    sorted by step, where a repeated step keeps the point added last: the read contract the
    conformance suite checks. ``names``, if given, keeps only those metrics.
    """

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self._names = None if names is None else frozenset(names)
        self._found: dict[tuple[str, str], tuple[dict[str, Any], dict[int, tuple[float, float]]]] = {}

    def add(
        self,
        name: str,
        context: Mapping[str, Any],
        steps: Sequence[int],
        values: Sequence[float],
        timestamps: Sequence[float],
    ) -> None:
        """Points of one metric in one context, as stored (e.g. a group of ``MetricBatch.groups()``)."""
        if self._names is not None and name not in self._names:
            return
        key = (name, json.dumps(context, sort_keys=True, default=str))
        points = self._found.setdefault(key, (dict(context), {}))[1]
        points.update(zip(steps, zip(values, timestamps)))  # a step seen again: the later point wins

    def series(self) -> list[MetricSeries]:
        """Every history added, each as columns sorted by step."""
        out = []
        for (name, _), (context, points) in self._found.items():
            steps = sorted(points)
            values = array("d", (points[step][0] for step in steps))
            timestamps = array("d", (points[step][1] for step in steps))
            out.append(MetricSeries(name, array("q", steps), values, timestamps, context))
        return out


# --- crash detection of a dead writer -------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def _pid_namespace() -> str:
    """This process's PID namespace (Linux: ``pid:[4026531836]``); "" where unknown.

    Two containers on one machine may share a hostname but not their process ids.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux); "" where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


@attrs.frozen
class WriterRecord:
    """Who writes a run: machine, process id, and when that process started.

    Store :meth:`current` with the run when the backend creates it (the backend runs in the
    process that writes: the trainer, or mltrack's writer process). The start time makes a
    reused process id read as a different process, not as the writer still alive.
    """

    host: str
    pid: int
    started: str = ""
    """The process's start time in clock ticks since boot (Linux); "" where unknown."""
    pid_namespace: str = ""
    """Whose process ids these are (Linux; a container has its own); "" where unknown."""

    @classmethod
    def current(cls) -> WriterRecord:
        """This process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_ticks(pid), _pid_namespace())

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON values, to store beside the run."""
        return attrs.asdict(self)

    def to_text(self) -> str:
        """The record as one line, ``<host> <pid> <start ticks> <pid namespace>`` (a tag, a field)."""
        return " ".join((self.host, str(self.pid), self.started, self.pid_namespace)).rstrip()

    @classmethod
    def from_text(cls, text: str) -> WriterRecord | None:
        """A record written by :meth:`to_text` (or its older ``<host> <pid> [<ticks>]``); None if unreadable."""
        parts = text.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), *parts[2:4])

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> WriterRecord | None:
        """A record stored by :meth:`to_json`; None for None or a record it cannot read."""
        try:
            if data is None:
                return None
            namespace = str(data.get("pid_namespace", ""))
            return cls(str(data["host"]), int(data["pid"]), str(data.get("started", "")), namespace)
        except (KeyError, TypeError, ValueError):
            return None

    def is_gone(self) -> bool:
        """True if the writer is known to have ended (see :meth:`state`); False when alive or unknown."""
        return self.state() == "dead"

    def state(self) -> str:
        """``alive``, ``dead`` or ``unknown``: whether the writer process still runs.

        On this machine its process is looked up (a zombie, or another process now holding
        its id, is dead). A writer in another container (another PID namespace) on this
        machine is found by its namespace and its id there, from any process that can see that
        namespace (the host sees every container's). ``unknown`` for a writer on another
        machine, in a namespace this process cannot see, or on Windows: there, a store needs
        a heartbeat of its own.
        """
        if self.host != socket.gethostname() or os.name == "nt":
            return "unknown"
        if self.pid_namespace and self.pid_namespace != _pid_namespace():
            return _state_in_namespace(self.pid_namespace, self.pid, self.started)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "dead"
        except PermissionError:
            pass  # it exists, under another user: the start time below still tells
        fields = _proc_stat(self.pid)
        if fields is None:
            return "alive"  # no /proc: the process exists, which is all that can be told
        if fields and fields[0] in ("Z", "X"):
            return "dead"  # a zombie has written its last
        if self.started and len(fields) > 19 and fields[19] != self.started:
            return "dead"  # another process holds the id now
        return "alive"


_INITIAL_PID_NAMESPACE = "pid:[4026531836]"
"""The kernel's first PID namespace (a fixed inode): a process there sees every process."""


def _state_in_namespace(namespace: str, pid: int, started: str) -> str:
    """Whether process ``pid`` of PID namespace ``namespace`` runs, seen from outside it.

    Each process's ``NSpid`` line lists its id in every namespace it belongs to, innermost
    last; its ``ns/pid`` link names its own namespace. A namespace with no process left is
    empty: all of its processes ended, the writer too (when this process could see them).
    """
    seen_namespace = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return "unknown"
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        seen_namespace = True
        ids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if ids and ids[-1] == str(pid):
            fields = _proc_stat(int(entry))
            if fields and fields[0] in ("Z", "X"):
                return "dead"
            if started and fields and len(fields) > 19 and fields[19] != started:
                return "dead"
            return "alive"
    if seen_namespace or _pid_namespace() == _INITIAL_PID_NAMESPACE:
        return "dead"
    return "unknown"


def run_status(status: ExperimentStatus, writer: WriterRecord | None) -> ExperimentStatus:
    """The status readers see: a RUNNING run whose writer is gone reads CRASHED; others as stored.

    mltrack's writer process finishes a dead trainer's runs CRASHED itself; this covers the
    rest (a trainer writing in-process that was killed, a writer process killed too).
    """
    if status is ExperimentStatus.RUNNING and writer is not None and writer.is_gone():
        return ExperimentStatus.CRASHED
    return status


# --- health detail keys -------------------------------------------------------------------


def plain_detail_keys(backend: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` with the keys as mltrack shows them under ``backend``: without the name.

    mltrack reports a backend's details under its name (``mltrack health`` prints
    ``jsonl.root``), so a key already prefixed (``jsonl.root``) or a dict nested under the
    name (``{"jsonl": {"root": ...}}``) would show the name twice; both are unwrapped here.
    """
    out: dict[str, Any] = {}
    for key, value in details.items():
        if key == backend and isinstance(value, Mapping):
            out.update(plain_detail_keys(backend, value))
        else:
            out[key.removeprefix(f"{backend}.")] = value
    return out


def health_status(backend: str, issues: Iterable[str] = (), **details: Any) -> HealthStatus:
    """A backend's ``mltrack_health`` answer: healthy when ``issues`` is empty.

    Each issue is a sentence ending with its fix; ``details`` are plain keys (``root=...``,
    ``runs=3``) with JSON values: mltrack adds the backend's name once when it shows them.
    """
    found = tuple(issues)
    return HealthStatus(not found, found, backend=backend, details=plain_detail_keys(backend, details))
