"""TensorBoard's event-file format: TFRecord framing, scalar events encoded directly, and a reader.

A record is ``uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data)``;
``data`` is a serialized ``tensorboard.Event``. Scalar points are encoded here byte by byte
(about a microsecond each instead of building protobuf objects): a rank-0 ``DT_FLOAT`` tensor
with the ``scalars`` plugin's metadata, which TensorBoard charts like any scalar (its data
server takes no other dtype for scalars), carrying the exact float64 beside it in the
tensor's ``double_val``, which mltrack reads back and TensorBoard ignores. Everything else is built with
the protocol buffers the ``tensorboard`` package ships (no TensorFlow; tensorboardX's own copies
would import torch, when installed, with the package: 1.2 s at every writer process start).
The ``crc32c`` package computes checksums in C.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from crc32c import crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2

__all__ = [
    "Event",
    "FastScalars",
    "TagEncoder",
    "decode_events",
    "encode_event",
    "file_version_record",
    "frame",
    "json_summary",
    "read_records",
    "scalar_of",
    "text_summary",
]

Event = event_pb2.Event
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_MASK_DELTA = 0xA282EAD8
SCALARS_PLUGIN = "scalars"
JSON_PLUGIN = "mltrack"
"""Plugin name of mltrack's own JSON records: TensorBoard shows no plugin of that name."""


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord holding ``data``."""
    header = _U64.pack(len(data))
    return header + _U32.pack(_masked(header)) + data + _U32.pack(_masked(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# SummaryMetadata{plugin_data{plugin_name: "scalars"}, data_class: DATA_CLASS_SCALAR}
_SCALAR_METADATA = _field(1, _field(1, SCALARS_PLUGIN.encode())) + b"\x20\x01"
# Value.tensor = TensorProto{dtype: DT_FLOAT, tensor_shape{}, float_val: [f32], double_val: [f64]},
# up to the 4 bytes of the float32; then the double's field header and its 8 bytes.
_TENSOR_HEAD = b"\x42\x14\x08\x01\x12\x00\x2a\x04"
_DOUBLE_HEAD = b"\x32\x08"
_F32 = struct.Struct("<f")


class TagEncoder:
    """Encodes scalar events of one tag: everything but the step, time and value is encoded once."""

    __slots__ = ("_middle",)

    def __init__(self, tag: str) -> None:
        value_head = _field(1, tag.encode("utf-8")) + _field(9, _SCALAR_METADATA) + _TENSOR_HEAD
        summary = _field(1, value_head + bytes(4) + _DOUBLE_HEAD + bytes(8))  # Summary{value: [...]}
        # Event field 5 (summary) up to the float32's 4 bytes; the double comes last.
        self._middle = _field(5, summary)[:-14]

    def record(self, step: int, value: float, wall_time: float) -> bytes:
        """The framed event of one point."""
        return self.records((step,), (value,), (wall_time,))

    def records(self, steps: Iterable[int], values: Iterable[float], wall_times: Iterable[float]) -> bytes:
        """The framed events of many points, one after the other (the writer's hot loop)."""
        out = bytearray()
        middle = self._middle
        small = _SMALL
        pack_d, pack_f, pack_u32 = _F64.pack, _F32.pack, _U32.pack
        heads: dict[int, bytes] = {}  # the length and its checksum, by data length
        for step, value, wall in zip(steps, values, wall_times):
            try:
                f32 = pack_f(value)
            except OverflowError:  # a finite double beyond float32's range: TensorBoard shows infinity
                f32 = pack_f(math.copysign(math.inf, value))
            data = b"".join(
                (
                    b"\x09",
                    pack_d(wall),
                    b"\x10",
                    small[step] if step < 128 else _varint(step),
                    middle,
                    f32,
                    _DOUBLE_HEAD,
                    pack_d(value),
                )
            )
            head = heads.get(len(data))
            if head is None:
                header = _U64.pack(len(data))
                head = heads[len(data)] = header + pack_u32(_masked(header))
            crc = crc32c(data)
            out += head
            out += data
            out += pack_u32((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)
        return bytes(out)


_SMALL = [bytes([n]) for n in range(128)]


class FastScalars:
    """Decodes the scalar events :class:`TagEncoder` writes without building protobuf objects.

    The bytes between an event's step and its float32 (the "middle": tag and metadata) identify
    the tag. The first event of each middle is decoded with protobuf and re-encoded: only when
    the encoder gives back exactly the same bytes is that middle trusted for every later event
    (step, time and value then sit at fixed places); any other record is left to protobuf.
    """

    __slots__ = ("_known", "_refused")

    def __init__(self) -> None:
        self._known: dict[bytes, str] = {}
        self._refused: set[bytes] = set()

    def decode(self, data: bytes) -> tuple[str, int, float, float] | None:
        """``(tag, step, value, wall time)`` of an event in mltrack's layout, else None."""
        n = len(data)
        if n < 34 or data[0] != 0x09 or data[9] != 0x10 or data[n - 10 : n - 8] != _DOUBLE_HEAD:
            return None
        pos, step, shift = 10, 0, 0
        while True:
            byte = data[pos]
            step |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                break
            shift += 7
            if pos >= n - 14:
                return None
        middle = data[pos : n - 14]
        tag = self._known.get(middle)
        if tag is None:
            tag = self._learn(middle, data)
            if tag is None:
                return None
        return tag, step, _F64.unpack_from(data, n - 8)[0], _F64.unpack_from(data, 1)[0]

    def _learn(self, middle: bytes, data: bytes) -> str | None:
        if middle in self._refused:
            return None
        try:
            event = Event.FromString(data)
            (value,) = event.summary.value
            tag = str(value.tag)
            again = TagEncoder(tag).record(event.step, value.tensor.double_val[0], event.wall_time)
        except Exception:  # not an event of this layout
            self._refused.add(middle)
            return None
        if again[12:-4] != data:  # e.g. a NaN with another payload: this one goes to protobuf
            return None
        self._known[middle] = tag
        return tag


def encode_event(event: Any) -> bytes:
    """The framed record of a protobuf ``Event``."""
    return frame(event.SerializeToString())


def file_version_record(wall_time: float) -> bytes:
    """The record every event file starts with (``brain.Event:2``)."""
    return encode_event(Event(wall_time=wall_time, file_version="brain.Event:2"))


def _string_tensor(text: str) -> Any:
    return tensor_pb2.TensorProto(
        dtype="DT_STRING",
        string_val=[text.encode("utf-8")],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
    )


def json_summary(tag: str, value: Any) -> Any:
    """A summary value holding ``value`` as JSON, under mltrack's own plugin name."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=JSON_PLUGIN)
    )
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata, tensor=_string_tensor(json.dumps(value, ensure_ascii=False))
    )


def text_summary(tag: str, text: str) -> Any:
    """A summary value TensorBoard's Text tab shows (markdown)."""
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    plugin = summary_pb2.SummaryMetadata.PluginData(
        plugin_name="text", content=TextPluginData(version=0).SerializeToString()
    )
    return summary_pb2.Summary.Value(
        tag=tag, metadata=summary_pb2.SummaryMetadata(plugin_data=plugin), tensor=_string_tensor(text)
    )


def read_records(path: Path) -> Iterator[bytes]:
    """The data of each whole record of the file, checksums verified.

    A record cut off at the end (a writer killed mid-write, or one still writing) ends the
    file; a record whose checksum does not match is skipped, as TensorBoard does.
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return
    pos, end = 0, len(blob)
    unpack_u64, unpack_u32, crc, delta = _U64.unpack_from, _U32.unpack_from, crc32c, _MASK_DELTA
    checked_length = False
    while pos + 12 <= end:
        (length,) = unpack_u64(blob, pos)
        start = pos + 12
        stop = start + length
        if stop + 4 > end:
            return
        if not checked_length or length > 1 << 24:
            # The first length (and any implausibly large one) is checked against its checksum;
            # after that the data checksums catch a broken frame.
            if unpack_u32(blob, pos + 8)[0] != _masked(blob[pos : pos + 8]):
                return  # a broken length: nothing after it can be framed
            checked_length = True
        data = blob[start:stop]
        pos = stop + 4
        c = crc(data)
        if unpack_u32(blob, stop)[0] == (((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF:
            yield data


def decode_events(path: Path) -> Iterator[Any]:
    """The ``Event`` protocol buffers of one event file, in file order."""
    parse = Event.FromString
    for data in read_records(path):
        try:
            yield parse(data)
        except Exception:
            continue


def scalar_of(value: Any) -> float | None:
    """The number a summary value holds if it is a scalar (``simple_value`` or a rank-0 float tensor)."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor":
        return None
    tensor = value.tensor
    if tensor.tensor_shape.dim and any(d.size != 1 for d in tensor.tensor_shape.dim):
        return None
    if tensor.double_val:
        return float(tensor.double_val[0])
    if tensor.float_val:
        return float(tensor.float_val[0])
    if tensor.tensor_content and tensor.dtype in (1, 2):  # DT_FLOAT, DT_DOUBLE
        fmt = "<f" if tensor.dtype == 1 else "<d"
        return float(struct.unpack_from(fmt, tensor.tensor_content)[0])
    if tensor.int64_val:
        return float(tensor.int64_val[0])
    if tensor.int_val:
        return float(tensor.int_val[0])
    return math.nan if tensor.dtype in (1, 2) and not tensor.string_val else None
