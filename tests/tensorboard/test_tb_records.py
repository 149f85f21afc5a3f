"""The event-file format as mltrack writes and reads it: every value and step survives, the fast
decoder agrees with protobuf, and a cut or damaged file loses only what is damaged."""

from __future__ import annotations

import math
from pathlib import Path

from tensorboard.compat.proto import event_pb2

from mltrack.models import MAX_STEP
from mltrack_tensorboard import records as rec
from mltrack_tensorboard.backend import read_scalars

STEPS = [0, 1, 127, 128, 300, 16_384, 2**40, MAX_STEP]
VALUES = [math.nan, math.inf, -math.inf, 1e300, -1e300, 0.1, -0.0, 5e-324]
WALLS = [1.7e9 + i * 0.001 for i in range(len(STEPS))]


def _file(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(rec.file_version_record(1.0) + body)
    return path


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def test_every_value_and_step_reads_back_exactly_and_protobuf_agrees(tmp_path: Path) -> None:
    body = rec.TagEncoder("loss").records(STEPS, VALUES, WALLS)
    body += rec.TagEncoder("acc{subset=val}").records([2], [0.75], [1.8e9])
    path = _file(tmp_path, body)
    steps, values, walls = read_scalars([path])["loss"]
    assert list(steps) == STEPS and list(walls) == WALLS
    assert all(_same(g, w) for g, w in zip(values, VALUES, strict=True))
    assert [list(c) for c in read_scalars([path])["acc{subset=val}"]] == [[2], [0.75], [1.8e9]]
    decoder = rec.FastScalars()
    for data in list(rec.read_records(path))[1:]:
        event = event_pb2.Event.FromString(data)
        (value,) = event.summary.value
        fast = decoder.decode(data)
        assert fast is not None
        assert fast[:2] == (value.tag, event.step) and fast[3] == event.wall_time
        assert _same(fast[2], value.tensor.double_val[0])
        # TensorBoard's own view: a float32 scalar, infinite where the double is beyond float32.
        assert value.metadata.plugin_data.plugin_name == "scalars" and value.tensor.dtype == 1


def test_a_cut_or_damaged_file_loses_only_the_damaged_points(tmp_path: Path) -> None:
    encoder = rec.TagEncoder("m")
    records = [encoder.record(step, float(step), 1.0 + step) for step in range(10)]
    damaged = bytearray(records[4])
    damaged[30] ^= 0xFF  # a byte of point 4's data: its checksum no longer matches
    body = b"".join(records[:4]) + bytes(damaged) + b"".join(records[5:]) + records[0][:20]  # and a cut tail
    steps, values, _walls = read_scalars([_file(tmp_path, body)])["m"]
    assert list(steps) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert list(values) == [0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0]
