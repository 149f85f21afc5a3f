"""Reading a metric's columns straight from RocksDB, decoded in bulk with NumPy.

Aim's ``metric.data.numpy()`` decodes every record in Python, column by column: about 7-10
us a value a column. Each record of a v2 metric column is Aim's encoding of one scalar
(a type byte and 8 bytes), stored under the column's prefix plus the step's hash, so the
columns of one metric share their keys in the same order. Joining the raw values and
viewing them as a NumPy record array decodes a column in one step. The layout is Aim's
internal one: this path is used only on the Aim versions it was tested on (see
``mltrack_aim.batch.batch_path_enabled``) and falls back to Aim's own reader whenever a
column does not look exactly as expected.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np

from mltrack_aim.batch import PrefixView

__all__ = ["read_columns"]

_FLOAT = np.dtype([("type", "u1"), ("value", "<f8")])
_INT = np.dtype([("type", "u1"), ("value", "<i8")])
_TYPE_INT, _TYPE_FLOAT = 2, 3


def _scan(container: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) under ``prefix``, read in chunks so the per-record work stays in C."""
    it = container.db.iteritems()
    it.seek(prefix)
    out: list[tuple[bytes, bytes]] = []
    while True:
        chunk = list(islice(it, 8192))
        if not chunk:
            return out
        if chunk[-1][0].startswith(prefix):
            out.extend(chunk)
            continue
        end = len(chunk)
        while end and not chunk[end - 1][0].startswith(prefix):
            end -= 1
        out.extend(chunk[:end])
        return out


def _raw_column(series_tree: Any, column: str) -> tuple[list[bytes], list[bytes]] | None:
    """The column's records as (first and last key suffix, values), or None if unexpected."""
    container = series_tree.array(column).tree.container
    prefix = b""
    while isinstance(container, PrefixView):
        prefix = container.prefix + prefix
        container = container.parent
    items = _scan(container, prefix)
    if not items or items[0][0] != prefix:  # the prefix's own record is Aim's array marker
        return None
    cut = len(prefix)
    ends = [items[1][0][cut:], items[-1][0][cut:]] if len(items) > 1 else []
    return ends, [value for _, value in items[1:]]


def _decode(values: list[bytes], dtype: type[np.generic] = np.float64) -> np.ndarray | None:
    """One column's values as ``dtype``, or None if any record is not a plain int or float.

    Integers are converted straight from int64 (steps beyond 2**53 stay exact as int64).
    """
    if not values:
        return np.empty(0, dtype=dtype)
    raw = b"".join(values)
    if len(raw) != 9 * len(values):
        return None
    types = np.frombuffer(raw, dtype=_FLOAT)["type"]
    if (types == _TYPE_FLOAT).all():
        return np.frombuffer(raw, dtype=_FLOAT)["value"].astype(dtype)
    if (types == _TYPE_INT).all():
        return np.frombuffer(raw, dtype=_INT)["value"].astype(dtype)
    return None


def read_columns(series_tree: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(steps, values, timestamps)`` of one metric sorted by step, or None to use Aim's reader."""
    columns = [_raw_column(series_tree, name) for name in ("step", "val", "time")]
    if any(c is None for c in columns):
        return None
    (step_ends, step_raw), (val_ends, val_raw), (time_ends, time_raw) = columns  # type: ignore[misc]
    # The columns share their keys; a point half-written by a crash shows as a count mismatch.
    if not (len(step_raw) == len(val_raw) == len(time_raw) and step_ends == val_ends == time_ends):
        return None
    steps, values, times = _decode(step_raw, np.int64), _decode(val_raw), _decode(time_raw)
    if steps is None or values is None or times is None:
        return None
    order = np.argsort(steps, kind="stable")  # records are in step-hash order
    return steps[order], values[order], times[order]
