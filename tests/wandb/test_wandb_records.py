"""W&B's transaction-log framing and the hand-encoded history rows, against W&B's own protobuf classes."""

from __future__ import annotations

import os
import random

import pytest

from mltrack_wandb import records
from mltrack_wandb.runlog import pb


@pytest.mark.parametrize(("num", "step"), [(1, 0), (2, 1), (300, 127), (2**40, 2**33)])
def test_a_hand_encoded_history_row_is_the_protobuf_wandb_serializes(num: int, step: int) -> None:
    items = [
        ("_step", str(step)),
        ("_timestamp", "1796205036.3363261"),
        ("loss", "NaN"),
        ("损失 x" * 40, "0.5"),
    ]
    want = pb.Record(num=num)
    want.history.step.num = step
    for key, value in items:
        want.history.item.add(key=key, value_json=value)
    want._info.stream_id = "abc123def456abc123def456"
    got = records.history_row(
        num,
        step,
        [(records.history_key(k), v) for k, v in items],
        records.record_info("abc123def456abc123def456"),
    )
    assert got == want.SerializeToString()
    assert pb.Record.FromString(got) == want


def test_records_of_any_size_round_trip_across_blocks_appended_in_pieces() -> None:
    rng = random.Random(7)
    payloads = [os.urandom(rng.choice([0, 1, 6, 7, 100, 32_761, 32_768, 70_000])) for _ in range(60)]
    data = b""
    for start in range(0, len(payloads), 7):  # appended batch by batch, as a writer does
        data += records.encode(payloads[start : start + 7], len(data))
    assert data.startswith(records.FILE_HEADER)
    assert [raw for raw, _ in records.decode(data)] == payloads

    # read incrementally, from where the last read stopped, as readers of a growing log do
    got, offset = [], 0
    for cut in range(0, len(data) + 50_000, 50_000):
        for raw, end in records.decode(data[offset:cut], offset):
            got.append(raw)
            offset = end
    assert got == payloads


def test_a_torn_tail_ends_the_log_at_the_last_whole_record() -> None:
    payloads = [b"a" * 10, b"b" * 40_000, b"c" * 10]
    data = records.encode(payloads, 0)
    for cut in (len(data) - 1, len(data) - 12, len(data) - 20_000):
        assert [raw for raw, _ in records.decode(data[:cut])] == payloads[: 1 if cut < len(data) - 17 else 2]
    corrupt = bytearray(data)
    corrupt[-3] ^= 0xFF
    assert [raw for raw, _ in records.decode(bytes(corrupt))] == payloads[:2]


def test_history_rows_are_told_apart_from_other_records_without_parsing() -> None:
    row = records.history_row(70_000, 5, [(records.history_key("loss"), "1.5")], records.record_info("r"))
    assert records.history_num(row) == 70_000
    summary = pb.Record(num=3)
    summary.summary.update.add(key="loss", value_json="1.5")
    assert records.history_num(summary.SerializeToString()) is None
    no_num = pb.Record()
    no_num.history.step.num = 1
    assert records.history_num(no_num.SerializeToString()) == 0


def test_a_batch_becomes_rows_of_one_step_and_time_as_wandb_serializes_them() -> None:
    """Points of one step and time share a row; a new step, time or a metric seen again starts one."""
    keys = ["loss", "reward"]
    points = [  # (key index, step, value, time)
        (0, 0, 1.0, 100.0),
        (1, 0, float("nan"), 100.0),
        (0, 0, 2.0, 100.0),  # loss again at step 0: a new row
        (1, 1, float("inf"), 100.0),
        (0, 1, float("-inf"), 100.5),  # same step, another time: a new row
    ]
    bodies = records.history_bodies(
        [records.history_key(k) for k in keys],
        [p[0] for p in points],
        [p[1] for p in points],
        [p[2] for p in points],
        [p[3] for p in points],
        start=99.0,
    )
    rows = [pb.HistoryRecord.FromString(body) for body in bodies]
    assert [dict((i.key, i.value_json) for i in row.item) for row in rows] == [
        {"_step": "0", "_timestamp": "100.0", "_runtime": "1.0", "loss": "1.0", "reward": "NaN"},
        {"_step": "0", "_timestamp": "100.0", "_runtime": "1.0", "loss": "2.0"},
        {"_step": "1", "_timestamp": "100.0", "_runtime": "1.0", "reward": "Infinity"},
        {"_step": "1", "_timestamp": "100.5", "_runtime": "1.5", "loss": "-Infinity"},
    ]
    assert [row.step.num for row in rows] == [0, 0, 1, 1] and all(row.HasField("step") for row in rows)
    for row, body in zip(rows, bodies):
        assert body == row.SerializeToString()
