"""W&B's transaction log (``run-<id>.wandb``): its framing, written and read without W&B's service.

The file starts with a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0), then holds
records in LevelDB's log format: 32 KiB blocks, each record cut into chunks of
``crc32 (IEEE, of type byte + data) | length (2 bytes) | type (FULL, FIRST, MIDDLE, LAST)``
that never cross a block end (a tail shorter than a chunk header is zero padding). Each
record is a serialized ``wandb_internal_pb2.Record``. This module knows the framing only; it
imports nothing of wandb.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["BLOCK_SIZE", "FILE_HEADER", "decode", "encode"]

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (FULL, FIRST, MIDDLE, LAST)}
_CHUNK = struct.Struct("<IHB")


def _chunk(kind: int, data: bytes) -> bytes:
    return _CHUNK.pack(zlib.crc32(data, _TYPE_CRC[kind]) & 0xFFFFFFFF, len(data), kind) + data


def encode(records: Iterable[bytes], offset: int) -> bytes:
    """The bytes that append ``records`` to a log whose file is ``offset`` bytes long.

    ``offset`` 0 writes the file header first. Block padding and chunking follow LevelDB's
    log writer, so W&B's own reader (``wandb sync``, ``wandb leet``) reads the result.
    """
    out = bytearray()
    if offset == 0:
        out += FILE_HEADER
        offset = len(FILE_HEADER)
    for data in records:
        first = True
        while True:
            left = BLOCK_SIZE - offset % BLOCK_SIZE
            if left < CHUNK_HEADER:
                out += b"\0" * left
                offset += left
                continue
            room = left - CHUNK_HEADER
            piece, data = data[:room], data[room:]
            last = not data
            kind = (FULL if last else FIRST) if first else (LAST if last else MIDDLE)
            out += _chunk(kind, piece)
            offset += CHUNK_HEADER + len(piece)
            first = False
            if last:
                break
    return bytes(out)


def decode(data: bytes, base: int = 0) -> Iterator[tuple[bytes, int]]:
    """Each whole record in ``data``, the bytes of a log file from offset ``base`` on, with the
    file offset after it.

    Stops at the first chunk that is incomplete or fails its checksum: the tail a writer is
    still appending, or what a killed writer left half written. ``base`` 0 checks the file
    header; a later ``base`` must be an offset this function returned.
    """
    offset = base
    if base == 0:
        if not data.startswith(FILE_HEADER):
            return
        offset = len(FILE_HEADER)
    pending = bytearray()
    end_of_data = base + len(data)
    while True:
        left = BLOCK_SIZE - offset % BLOCK_SIZE
        if left < CHUNK_HEADER:
            if offset + left > end_of_data:
                return
            offset += left
            continue
        if offset + CHUNK_HEADER > end_of_data:
            return
        crc, length, kind = _CHUNK.unpack_from(data, offset - base)
        if kind == 0 and length == 0 and crc == 0:  # zeros: padding up to the block's end
            if offset + left > end_of_data:
                return
            offset += left
            continue
        end = offset + CHUNK_HEADER + length
        if end > end_of_data or length > left - CHUNK_HEADER or kind not in _TYPE_CRC:
            return
        piece = data[offset + CHUNK_HEADER - base : end - base]
        if zlib.crc32(piece, _TYPE_CRC[kind]) & 0xFFFFFFFF != crc:
            return
        offset = end
        if kind == FULL:
            pending.clear()
            yield piece, offset
        elif kind == FIRST:
            pending[:] = piece
        elif kind == MIDDLE:
            pending += piece
        else:
            pending += piece
            yield bytes(pending), offset
            pending.clear()


# --- history rows, encoded by hand -----------------------------------------------------------
# A history row is most of what a run logs: building it as a protobuf message costs ~20 µs
# here, these bytes ~3 µs. They are the bytes ``Record.SerializeToString()`` gives for
# ``Record(num, history=HistoryRecord(item=[HistoryItem(key, value_json)...],
# step=HistoryStep(num)), _info=_RecordInfo(stream_id))`` (fields in number order); a test
# keeps them equal.


_SMALL_VARINTS = [bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7]) for v in range(1 << 14)]


def _varint(value: int) -> bytes:
    if value < 1 << 14:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def history_key(key: str) -> bytes:
    """The encoded ``key`` field of a history item, computed once per metric key."""
    return _field(b"\x0a", key.encode("utf-8"))


def record_info(stream_id: str) -> bytes:
    """The encoded ``_info`` field (``stream_id``: the run id) that ends each record."""
    return _field(b"\xc2\x0c", _field(b"\x0a", stream_id.encode("utf-8")))


def history_item(key: bytes, value_json: str) -> bytes:
    """One encoded history item: ``key`` from :func:`history_key`, the value as JSON text."""
    text = value_json.encode()
    item = key + b"\x82\x01" + _varint(len(text)) + text
    return b"\x0a" + _varint(len(item)) + item


def history_body(step: int, items: Iterable[bytes]) -> bytes:
    """An encoded ``HistoryRecord``: its items (:func:`history_item`), then its step."""
    step_field = b"\x08" + _varint(step) if step else b""
    return b"".join(items) + b"\x12" + _varint(len(step_field)) + step_field


def history_record(num: int, body: bytes, info: bytes) -> bytes:
    """A serialized ``Record`` holding the history row ``body`` (:func:`history_body`)."""
    return b"\x08" + _varint(num) + b"\x12" + _varint(len(body)) + body + info


def history_row(num: int, step: int, items: Iterable[tuple[bytes, str]], info: bytes) -> bytes:
    """A serialized ``Record`` holding one history row: ``items`` are (:func:`history_key`, value_json)."""
    body = history_body(step, [history_item(key, value) for key, value in items])
    return history_record(num, body, info)


_STEP_ITEM = history_key("_step") + b"\x82\x01"
_TIMESTAMP_ITEM = history_key("_timestamp") + b"\x82\x01"
_RUNTIME_ITEM = history_key("_runtime") + b"\x82\x01"


def history_bodies(
    keys: Sequence[bytes],
    key_index: Sequence[int],
    steps: Sequence[int],
    values: Sequence[float],
    stamps: Sequence[float],
    start: float,
) -> list[bytes]:
    """The history rows of a batch of points (columns, in log order), each as :func:`history_body`.

    Consecutive points of one step and one time share a row (a metric seen again starts a new
    one); each row holds ``_step``, ``_timestamp`` and ``_runtime`` (seconds since ``start``), as
    W&B's SDK writes them. The hot path of writing: the bytes are put together inline.
    """
    varint = _varint
    bodies: list[bytes] = []
    row: list[bytes] = []
    seen: set[int] = set()
    row_step, row_stamp = -1, math.nan
    for index, step, value, stamp in zip(key_index, steps, values, stamps):
        if step != row_step or stamp != row_stamp or index in seen or not row:
            if row:
                step_field = b"\x08" + varint(row_step) if row_step else b""
                bodies.append(b"".join(row) + b"\x12" + varint(len(step_field)) + step_field)
            text = str(step).encode()
            first = _STEP_ITEM + varint(len(text)) + text
            text = repr(stamp).encode()
            second = _TIMESTAMP_ITEM + varint(len(text)) + text
            text = repr(stamp - start).encode() if stamp > start else b"0.0"
            third = _RUNTIME_ITEM + varint(len(text)) + text
            row = [
                b"\x0a" + varint(len(first)) + first,
                b"\x0a" + varint(len(second)) + second,
                b"\x0a" + varint(len(third)) + third,
            ]
            row_step, row_stamp = step, stamp
            seen = set()
        text = repr(value).encode() if math.isfinite(value) else _NON_FINITE[str(value)]
        item = keys[index] + b"\x82\x01" + varint(len(text)) + text
        row.append(b"\x0a" + varint(len(item)) + item)
        seen.add(index)
    if row:
        step_field = b"\x08" + varint(row_step) if row_step else b""
        bodies.append(b"".join(row) + b"\x12" + varint(len(step_field)) + step_field)
    return bodies


_NON_FINITE = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}


def history_num(raw: bytes) -> int | None:
    """The ``num`` of a serialized ``Record`` if it holds a history row, else None (a peek at its
    first fields: ``num`` (1) comes first, then the record's kind, ``history`` being field 2)."""
    num, i = 0, 0
    if raw[:1] == b"\x08":
        shift, i = 0, 1
        while i < len(raw):
            byte = raw[i]
            num |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if byte < 0x80:
                break
    return num if raw[i : i + 1] == b"\x12" else None
