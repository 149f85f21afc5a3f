"""The values mltrack passes around: runs, metrics, artifacts, summaries, health.

Validation and conversion happen here, once, at the boundary; everything past it can trust
the data it receives.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from mltrack.errors import (
    InvalidConfigError,
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    ValidationError,
)

__all__ = [
    "RESUMED_TAG",
    "ArtifactType",
    "ExperimentRun",
    "ExperimentStatus",
    "ExperimentSummary",
    "HealthStatus",
    "MetricBatch",
    "MetricPoint",
    "MetricSeries",
    "ModelArtifact",
    "RunFilter",
    "TrainingMetrics",
    "UiHandle",
    "final_metric_key",
    "is_secret_name",
    "mask_context",
    "mask_secrets",
    "mask_text",
    "to_artifact_type",
    "to_metric_value",
    "to_plain",
    "to_step",
    "validate_name",
]

MAX_NAME_LENGTH = 255

RESUMED_TAG = "mltrack:resumed"
"""A run resumed ``n`` times carries the tags ``<this>=1`` ... ``<this>=<n>`` (one per resume)."""

Context = tuple[tuple[str, Any], ...]
"""A metric context (e.g. ``{"subset": "val"}``) frozen as sorted items, so it can key a dict."""


def final_metric_key(name: str, context: Context) -> str:
    """How a metric logged in a context is named among final metrics: ``loss{subset=val}``."""
    return name if not context else name + "{" + ",".join(f"{k}={v}" for k, v in context) + "}"


class ExperimentStatus(str, enum.Enum):
    """Where a run is in its life; CRASHED means its writer died without finishing it."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CRASHED = "crashed"

    @property
    def is_finished(self) -> bool:
        """True for every status but RUNNING."""
        return self is not ExperimentStatus.RUNNING

    def __str__(self) -> str:
        return self.value


class ArtifactType(str, enum.Enum):
    """What a stored file is, so tools can find 'the model' among a run's files."""

    MODEL = "model"
    CHECKPOINT = "checkpoint"
    DATASET = "dataset"
    PLOT = "plot"
    CONFIG = "config"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


def to_artifact_type(artifact_type: object) -> ArtifactType:
    """An ArtifactType from the enum or its value (``"model"``); anything else raises, listing the valid ones."""
    try:
        return ArtifactType(artifact_type)
    except ValueError:
        choices = ", ".join(t.value for t in ArtifactType)
        raise ValidationError(f"artifact type {artifact_type!r:.40} is not one of: {choices}") from None


def to_status(status: object) -> ExperimentStatus:
    """An ExperimentStatus from the enum or its value (``"completed"``); anything else raises."""
    try:
        return ExperimentStatus(status)
    except ValueError:
        choices = ", ".join(s.value for s in ExperimentStatus)
        raise ValidationError(f"status {status!r:.40} is not one of: {choices}") from None


# --- validation -------------------------------------------------------------------------


def validate_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a non-empty printable str of at most 255 characters, else raise."""
    if type(name) is not str:
        raise InvalidNameError(f"{what} must be a str, got {type(name).__name__}: {name!r:.80}")
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidNameError(
            f"{what} {name!r:.80} is not allowed: use 1 to {MAX_NAME_LENGTH} printable characters"
        )
    if name.isspace():  # it would show as nothing in every listing
        raise InvalidNameError(f"{what} {name!r:.80} is blank: give it at least one visible character")
    return name


_FLOATISH = (int, float)


def to_metric_value(name: str, value: object) -> float:
    """Convert a metric value to float: int, float, bool, NumPy scalars and 0-d tensors.

    NaN and infinities are kept, since a diverging loss is a real training outcome.
    """
    if type(value) is float:
        return value
    if isinstance(value, _FLOATISH):  # int and bool (bool is an int)
        try:
            return float(value)
        except OverflowError:
            raise InvalidMetricError(f"metric {name!r}: {value!r:.40} is too large for a float") from None
    # NumPy scalars, 0-d arrays and 0-d tensors all expose item() and a shape of ().
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if item is not None and shape is not None and tuple(shape) in ((), (1,)):
        inner = item()
        if isinstance(inner, _FLOATISH):
            return float(inner)
    raise InvalidMetricError(
        f"metric {name!r}: expected a number (int, float, bool, NumPy scalar or 0-d tensor), "
        f"got {type(value).__name__}: {value!r:.80}"
    )


MAX_STEP = 2**63 - 2
"""The largest step: steps are stored as signed 64-bit integers (and one more for "next step")."""


def to_step(step: object) -> int:
    """Convert a step to an int in 0..MAX_STEP; integral floats (``10.0``) are accepted."""
    if type(step) is int and 0 <= step <= MAX_STEP:
        return step
    if isinstance(step, bool):
        raise InvalidStepError(f"step must be a whole number >= 0, got a bool: {step!r}")
    if isinstance(step, int) and 0 <= step <= MAX_STEP:
        return int(step)
    if isinstance(step, float) and step.is_integer() and 0 <= step <= MAX_STEP:
        return int(step)
    item = getattr(step, "item", None)
    if item is not None and getattr(step, "shape", None) == ():
        return to_step(item())
    raise InvalidStepError(
        f"step must be a whole number from 0 to {MAX_STEP}, got {type(step).__name__}: {step!r:.40}"
    )


def to_plain(value: object, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """Convert a config value to plain JSON-like types (dict, list, str, int, float, bool, None).

    NumPy/torch scalars become Python numbers, tuples and sets become lists, enums their
    value, paths and other objects their ``str``. Cycles and nesting beyond 32 levels are
    cut with a marker string instead of recursing forever.
    """
    if value is None or type(value) in (str, float, bool):
        return value
    if type(value) is int:
        # Stores keep integers in 64 bits; a larger one is kept exactly, as its decimal string.
        return value if -(2**63) <= value < 2**63 else str(value)
    if _depth > 32 or id(value) in _seen:
        return "<cycle or too deep>"
    if isinstance(value, enum.Enum):
        return to_plain(value.value, _depth + 1, _seen)
    for plain in (bool, int, float, str):  # subclasses such as numpy.float64 or str enums
        if isinstance(value, plain):
            return to_plain(plain(value), _depth + 1, _seen)
    seen = _seen | {id(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, _depth + 1, seen) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v, _depth + 1, seen) for v in items]
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == ():
        return to_plain(item(), _depth + 1, seen)
    if hasattr(value, "tolist") and hasattr(value, "shape"):
        return to_plain(value.tolist(), _depth + 1, seen)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_context(context: Mapping[str, Any] | None) -> Context:
    """Freeze a context mapping into sorted ``(key, plain value)`` items."""
    if not context:
        return ()
    return tuple(sorted((validate_name(k, "context key"), to_plain(v)) for k, v in context.items()))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _to_tags(tags: object) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    return tuple(sorted({validate_name(t, "tag") for t in tags}))  # type: ignore[attr-defined]


def _to_str_tuple(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


MASK = "***"

# Words that name a secret wherever they appear in a key (``db_password``, ``X-Auth-Cookie``).
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "credential", "cookie", "authorization")
# Words that name a secret as a whole word of a key (``pwd``, ``auth``, ``apikey``).
_SECRET_WORDS = frozenset(
    {"pwd", "auth", "bearer", "jwt", "apikey", "accesskey", "privatekey", "secretkey", "sessionid", "dsn"}
)
# ``<word>_key`` / ``<word>_keys`` pairs that are secrets (a key ending in ``key`` alone is one too).
_KEY_PREFIXES = frozenset({"api", "access", "private", "secret", "ssh", "signing", "encryption", "master"})
# Tokens of a tokenizer are not credentials: ``pad_token``, ``eos_token``, ``max_tokens``.
_TOKENIZER_WORDS = frozenset(
    {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "special", "max"}
)
_WORD_SPLIT = re.compile(r"[^0-9a-zA-Z]+|(?<=[a-z0-9])(?=[A-Z])")
# ``scheme://user:password@host``: the password part, up to the last ``@`` before the path
# (an unencoded ``@`` in a password is masked too).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^/\s]+)@")
# ``name=value`` in a query string or a ``--name=value`` argument.
_ASSIGNMENT = re.compile(r"(?P<head>(?:^|[?&;\s])-{0,2}(?P<name>[A-Za-z][\w.-]*)=)(?P<value>[^&;#\s]*)")


@functools.lru_cache(maxsize=4096)
def is_secret_name(key: str) -> bool:
    """True if ``key`` names a secret: a password, token, api key, cookie, session id, ...

    Keys are split into words (``snake_case``, ``kebab-case``, ``camelCase``, ``X-Api-Key``)
    so that ``tokenizer``, ``max_tokens`` or ``session_length`` stay visible.
    """
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if not words:
        return False
    lowered = key.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if any(w in _SECRET_WORDS for w in words):
        return True
    if last == "key" or (last == "keys" and before in _KEY_PREFIXES):
        return True
    if last == "session" or (before == "session" and last in ("id", "key", "token", "cookie")):
        return True
    for i, word in enumerate(words):
        if word.endswith("token") and (i == 0 or words[i - 1] not in _TOKENIZER_WORDS):
            return True  # token, hf_token, access_token, githubToken; not tokens or tokenizer
    return False


def mask_text(text: str) -> str:
    """``text`` with URL passwords and secret-named ``name=value`` assignments replaced by ``***``.

    ``https://user:pass@host`` -> ``https://user:***@host``; ``?token=abc`` -> ``?token=***``;
    ``--password=abc`` -> ``--password=***``.
    """
    if "=" not in text and "@" not in text:
        return text
    masked = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + "@", text)
    return _ASSIGNMENT.sub(
        lambda m: m["head"] + MASK if m["value"] and is_secret_name(m["name"]) else m[0], masked
    )


def _mask_value(value: Any) -> Any:
    """``value`` with every secret inside it masked: secret-named keys, URL passwords, flags."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return mask_secrets(value)
    if isinstance(value, (list, tuple)):
        out = []
        secret_flag = False  # ["--password", "abc"]: the item after a secret-named flag
        for item in value:
            if secret_flag and isinstance(item, str) and item:
                out.append(MASK)
            else:
                out.append(_mask_value(item))
            secret_flag = (
                isinstance(item, str) and item.startswith("-") and "=" not in item and is_secret_name(item)
            )
        return out
    return value


def _secret_value(value: Any) -> bool:
    """Whether a value under a secret-named key is masked: empty values and flags show as they are."""
    return value is not None and value != "" and type(value) is not bool


def mask_secrets(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every secret in it replaced by ``***``, at any depth.

    Masked: values under keys that name a secret (password, token, api_key, pwd,
    Authorization, cookie, session, private_key, ...: see :func:`is_secret_name`), in nested
    dicts and in lists or tuples of them; passwords inside URLs and secret-named
    ``name=value`` assignments in any string (:func:`mask_text`). Configs are shown in every
    store's UI and exported freely; a credential passed along with hyperparameters must not
    end up there unless the user asks for it (``MLTRACK_KEEP_SECRETS``).
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if is_secret_name(str(key)) and _secret_value(value):
            out[key] = MASK
        else:
            out[key] = _mask_value(value)
    return out


def mask_context(context: Context) -> Context:
    """A metric context with secrets masked, as :func:`mask_secrets` masks a config."""
    for key, value in context:  # the common case, on the hot path: nothing to mask, nothing built
        if is_secret_name(key) or type(value) in (list, dict):
            break
        if type(value) is str and ("=" in value or "@" in value):
            break
    else:
        return context
    return tuple((k, MASK if is_secret_name(k) and _secret_value(v) else _mask_value(v)) for k, v in context)


def _to_config(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidConfigError(
            f"config must be a mapping of names to values (e.g. a dict), got {type(config).__name__}: {config!r:.60}"
        )
    return {validate_name(str(k), "config key"): to_plain(v) for k, v in config.items()}


# --- metrics ----------------------------------------------------------------------------


@attrs.define(init=False, eq=True)
class TrainingMetrics:
    """Metrics observed at one training step: the common ones by name, any others as keywords.

    ``TrainingMetrics(step=1000, loss=0.045, reward=1250.5, win_rate=0.68)``
    """

    step: int = attrs.field(converter=to_step)
    loss: float | None = None
    reward: float | None = None
    episode_length: float | None = None
    accuracy: float | None = None
    extra: dict[str, float] = attrs.field(factory=dict)
    timestamp: datetime | None = None

    def __init__(
        self,
        step: int,
        *,
        loss: float | None = None,
        reward: float | None = None,
        episode_length: float | None = None,
        accuracy: float | None = None,
        timestamp: datetime | None = None,
        **extra: float,
    ) -> None:
        named = {"loss": loss, "reward": reward, "episode_length": episode_length, "accuracy": accuracy}
        conv = {k: None if v is None else to_metric_value(k, v) for k, v in named.items()}
        checked = {validate_name(k, "metric name"): to_metric_value(k, v) for k, v in extra.items()}
        self.__attrs_init__(step=step, extra=checked, timestamp=timestamp, **conv)

    def as_dict(self) -> dict[str, float]:
        """Every metric that has a value, by name (``step`` and ``timestamp`` excluded)."""
        out = {
            k: v
            for k, v in (
                ("loss", self.loss),
                ("reward", self.reward),
                ("episode_length", self.episode_length),
                ("accuracy", self.accuracy),
            )
            if v is not None
        }
        out.update(self.extra)
        return out

    def __getattr__(self, name: str) -> float:
        # Lets ``metrics.win_rate`` read an extra metric like a named one.
        try:
            extra = object.__getattribute__(self, "extra")
        except AttributeError:
            raise AttributeError(name) from None
        if name in extra:
            return extra[name]  # type: ignore[no-any-return]
        raise AttributeError(f"{type(self).__name__!r} has no metric {name!r}")


@attrs.frozen
class MetricPoint:
    """One recorded value of one metric."""

    name: str
    value: float
    step: int
    timestamp: datetime | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class MetricSeries:
    """The history of one metric (in one context) as columns, sorted by step.

    ``steps``, ``values`` and ``timestamps`` (UTC epoch seconds) are sequences of equal length:
    ``array.array`` or NumPy arrays, whichever the backend reads fastest.
    """

    name: str
    steps: Sequence[int]
    values: Sequence[float]
    timestamps: Sequence[float] | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[MetricPoint]:
        ts = self.timestamps
        ctx = dict(self.context)
        for i in range(len(self.steps)):
            t = None if ts is None else datetime.fromtimestamp(float(ts[i]), timezone.utc)
            yield MetricPoint(self.name, float(self.values[i]), int(self.steps[i]), t, ctx)

    @property
    def last(self) -> float | None:
        """The value at the highest step, or None for an empty series."""
        return float(self.values[-1]) if len(self.values) else None


@attrs.frozen
class MetricBatch:
    """Points handed to backends in one write call, in columns.

    ``keys`` lists each distinct (metric name, context); ``key_index[i]`` says which key
    point ``i`` belongs to. Use :meth:`groups` to write one sequence at a time.
    """

    keys: Sequence[tuple[str, Context]]
    key_index: Sequence[int]
    steps: Sequence[int]
    values: Sequence[float]
    timestamps: Sequence[float]

    def __len__(self) -> int:
        return len(self.values)

    def groups(self) -> Iterator[tuple[str, dict[str, Any], list[int], list[float], list[float]]]:
        """Yield ``(name, context, steps, values, timestamps)`` per metric, points in log order."""
        if len(self.keys) == 1:  # the common case: one metric per batch, columns as they are
            name, ctx = self.keys[0]
            yield name, dict(ctx), list(self.steps), list(self.values), list(self.timestamps)
            return
        per_key: dict[int, tuple[list[int], list[float], list[float]]] = {}
        for k, s, v, t in zip(self.key_index, self.steps, self.values, self.timestamps):
            cols = per_key.get(k)
            if cols is None:
                cols = per_key[k] = ([], [], [])
            cols[0].append(s)
            cols[1].append(v)
            cols[2].append(t)
        for k, (s_col, v_col, t_col) in per_key.items():
            name, ctx = self.keys[k]
            yield name, dict(ctx), s_col, v_col, t_col


# --- runs, artifacts, summaries ---------------------------------------------------------


@attrs.frozen
class ExperimentRun:
    """A run being tracked, as returned by ``create_run``: pass it to every log call."""

    id: str
    experiment_name: str = attrs.field(validator=lambda _i, _a, v: validate_name(v, "experiment_name"))
    config: dict[str, Any] = attrs.field(factory=dict, converter=_to_config)
    start_time: datetime = attrs.field(factory=_utcnow)
    name: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    description: str | None = None

    @property
    def run_name(self) -> str:
        """The display name: ``name`` if set, else the experiment name."""
        return self.name or self.experiment_name


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@attrs.frozen
class ModelArtifact:
    """A stored file of a run: a model, checkpoint, dataset, plot, config or other file."""

    name: str
    artifact_type: ArtifactType = attrs.field(converter=to_artifact_type)
    file_path: str
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_to_config)
    size: int | None = None
    sha256: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.matches_re(_SHA256)),
    )


@attrs.frozen
class ExperimentSummary:
    """What a backend knows of a run: identity, status, timing, config and final metrics."""

    experiment_id: str
    name: str
    status: ExperimentStatus = attrs.field(converter=ExperimentStatus)
    start_time: datetime
    end_time: datetime | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    final_metrics: dict[str, float] = attrs.field(factory=dict)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    experiment_name: str | None = None
    description: str | None = None

    @property
    def duration(self) -> timedelta:
        """How long the run took, or has taken so far if it is still running."""
        end = self.end_time or _utcnow()
        return end - self.start_time

    @property
    def id(self) -> str:
        """Same as ``experiment_id``."""
        return self.experiment_id

    @property
    def resumed(self) -> int:
        """How many times the run was resumed (``start_run(resume=...)``): its highest ``mltrack:resumed=<n>`` tag."""
        prefix = f"{RESUMED_TAG}="
        counts = [t[len(prefix) :] for t in self.tags if t.startswith(prefix)]
        return max((int(c) for c in counts if c.isdigit()), default=0)


@attrs.frozen
class RunFilter:
    """What ``list_runs`` selects: every given condition must hold."""

    status: ExperimentStatus | None = None
    name: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
    limit: int | None = None

    def matches(self, summary: ExperimentSummary) -> bool:
        """True if ``summary`` passes every condition (``limit`` aside)."""
        if self.status is not None and summary.status is not self.status:
            return False
        if self.name is not None and self.name not in (summary.name, summary.experiment_name):
            return False
        return set(self.tags) <= set(summary.tags)


@attrs.frozen
class HealthStatus:
    """Whether tracking works right now, and if not, what is wrong and how to fix it."""

    is_healthy: bool
    issues: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    backend: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UiHandle:
    """A running store UI: where to open it and how to stop it (with its child processes)."""

    url: str
    pid: int
    stop: Callable[[], None] = attrs.field(eq=False, repr=False)
