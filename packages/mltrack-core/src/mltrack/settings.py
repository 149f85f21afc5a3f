"""Every environment variable mltrack reads: its type, default and meaning, and one parser per type.

mltrack and its backends read the environment only through :func:`env`, so each variable is
parsed the same way wherever it is read: a boolean accepts ``1/0/true/false/yes/no/on/off`` in
any case, and a value that does not parse raises :class:`ConfigurationError` naming the
variable and what it accepts (instead of being read as "on", or as "off", depending on the
module). The README's Configuration table lists the same variables with the same defaults;
``tests/core/test_settings_table.py`` fails when either drifts, or when a module reads a
variable not listed here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs

from mltrack.errors import ConfigurationError

__all__ = ["BOOL_WORDS", "SETTINGS", "Setting", "env", "parse_bool", "parse_names"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
BOOL_WORDS = "/".join(_TRUE + _FALSE)
"""The words a boolean setting accepts, in any case."""


def parse_bool(text: str) -> bool:
    """``text`` as a boolean: 1/true/yes/on or 0/false/no/off, in any case; else ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean: use one of {BOOL_WORDS} (any case)")


def parse_float(text: str) -> float:
    """``text`` as a number of seconds, points, ... (``0.1``, ``60``, ``1e6``); else ValueError."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number: use e.g. 0.5 or 60") from None


def parse_int(text: str) -> int:
    """``text`` as a whole number (``1000000``, or ``1e6``); else ValueError."""
    value = parse_float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not a whole number: use e.g. 1000000")
    return int(value)


def parse_str(text: str) -> str:
    """``text`` as it is (a path may hold any character)."""
    return text


def parse_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (``aim,mlflow``); empty text is an empty list."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": parse_bool,
    "float": parse_float,
    "int": parse_int,
    "str": parse_str,
    "names": parse_names,
}


@attrs.frozen
class Setting:
    """One environment variable: how it is parsed, what it means, and its default."""

    name: str
    type: str
    """``bool``, ``float``, ``int``, ``str`` or ``names`` (comma-separated): the parser used."""
    default: Any
    """The value when the variable is unset (or empty, except for ``names``: empty is none)."""
    shown_default: str
    """The default as the README's Configuration table shows it (checked by a test)."""
    meaning: str
    choices: tuple[str, ...] = ()
    """The only values a ``str`` setting accepts (empty: any)."""

    def parse(self, text: str) -> Any:
        """The value of ``text`` for this variable; raise :class:`ConfigurationError` if it does not parse."""
        if text.strip() == "" and self.type != "names":
            return self.default
        try:
            value = _PARSERS[self.type](text)
        except ValueError as exc:
            raise ConfigurationError(f"{self.name}={text!r}: {exc}") from None
        if self.choices and value not in self.choices:
            raise ConfigurationError(f"{self.name}={text!r}: use one of {', '.join(self.choices)}")
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("ML_TRACKING_BACKEND", "names", (), "the one persistent backend installed",
            "backend name(s); several write to each, reads come from the first"),
    Setting("ML_STORAGE_PATH", "str", None, "the backend's own (`./aim_logs`, `./mlflow_logs`)",
            "where the backend stores data (a folder)"),
    Setting("ML_EXPERIMENT_NAME", "str", "default", "`default`", "experiment name when create_run gets none"),
    Setting("AIM_REPO_PATH", "str", None, "`ML_STORAGE_PATH`",
            "Aim backend: its repository folder or aim://host:port (before ML_STORAGE_PATH)"),
    Setting("MLFLOW_TRACKING_URI", "str", None, "`ML_STORAGE_PATH`",
            "MLflow backend: its tracking URI or folder (before ML_STORAGE_PATH)"),
    Setting("MLTRACK_STRICT", "bool", False, "off", "store errors raise in the caller instead of being counted"),
    Setting("MLTRACK_FLUSH_INTERVAL", "float", 0.1, "`0.1`", "seconds between hand-overs of buffered points"),
    Setting("MLTRACK_MAX_BUFFERED_POINTS", "int", 1_000_000, "`1000000`", "points held before log calls wait"),
    Setting("MLTRACK_WRITER", "str", "auto", "`auto`", "where the store's work runs",
            choices=("thread", "process", "auto")),
    Setting("MLTRACK_HOOK_TIMEOUT", "float", 120.0, "`120`",
            "seconds a hook may take before its plugin is cut off (0: wait forever)"),
    Setting("MLTRACK_RETRY_WINDOW", "float", 60.0, "`60`", "seconds a write failing to connect is retried"),
    Setting("MLTRACK_SPOOL", "bool", True, "on",
            "spool every operation to local disk before the store takes it (group kills, outages lose nothing)"),
    Setting("MLTRACK_SPOOL_DIR", "str", None, "`~/.cache/mltrack/spool`",
            "where spool files live (local disk, not the store's)"),
    Setting("MLTRACK_SPOOL_MAX_BYTES", "int", 1_000_000_000, "`1e9`",
            "largest spool file; past it (store far behind) new points are not spooled, counted in health"),
    Setting("MLTRACK_OFFLINE", "bool", False, "off", "write to the spool only; `mltrack sync` delivers later"),
    Setting("MLTRACK_KEEP_SECRETS", "bool", False, "off", "store config values named like secrets as given"),
    Setting("MLTRACK_HANDLE_SIGTERM", "bool", True, "on", "SIGTERM finishes open runs INTERRUPTED"),
    Setting("MLTRACK_LOAD_PLUGINS", "names", None, "all", "allow-list of entry-point plugins to load (empty: none)"),
    Setting("MLTRACK_BLOCK_PLUGINS", "names", (), "none", "plugins never to load"),
    Setting("MLTRACK_STRICT_PLUGINS", "bool", False, "off", "a plugin that fails to load is an error"),
    Setting("MLTRACK_TRACE_HOOKS", "bool", False, "off", "print every hook call and its duration on stderr"),
    Setting("MLTRACK_AIM_BATCH", "bool", True, "on", "Aim backend: write metric batches in bulk"),
    Setting("MLTRACK_MLFLOW_BATCH", "bool", True, "on", "MLflow backend: write metric batches in bulk (SQLite)"),
    Setting("MLTRACK_REDIS_URL", "str", None, "unset (off)",
            "mltrack-redis: Redis to publish runs to live (redis://, rediss://, with password)"),
    Setting("MLTRACK_REDIS_STALL_AFTER", "float", 300.0, "`300`",
            "mltrack-redis: seconds without a metric or state before a run is announced stalled"),
    Setting("MLTRACK_REDIS_DEAD_AFTER", "float", 5.0, "`5`",
            "mltrack-redis: seconds without a heartbeat before a running run is announced crashed"),
    Setting("MLTRACK_SYSTEM_METRICS", "bool", True, "on",
            "mltrack-system: sample CPU, memory, disk, network and GPU into every run"),
    Setting("MLTRACK_SYSTEM_INTERVAL", "float", 10.0, "`10`", "mltrack-system: seconds between two samples"),
    Setting("WANDB_MODE", "str", None, "`offline`",
            "W&B backend: `online` also uploads each finished run with `wandb sync` (W&B's own variable)"),
    Setting("MLTRACK_WANDB_TIMEOUT", "float", 30.0, "`30`",
            "W&B backend: seconds closing waits for uploads before stopping them"),
)  # fmt: skip
"""Every environment variable mltrack reads, in the order of the README's Configuration table."""

_BY_NAME = {s.name: s for s in SETTINGS}


def env(name: str) -> Any:
    """The value of environment variable ``name``, parsed by its type in :data:`SETTINGS`.

    Unset (or empty, except for lists) gives the default; a value that does not parse raises
    :class:`ConfigurationError` naming the variable and what it accepts. Reading a variable
    that is not in the table is a programming error (KeyError): add it to the table first.
    """
    setting = _BY_NAME[name]
    raw = os.environ.get(name)
    if raw is None:
        return setting.default
    return setting.parse(raw)
