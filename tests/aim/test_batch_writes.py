"""The batched metric path writes exactly what ``run.track`` would: read back with Aim's SDK.

The batch path uses Aim internals (see mltrack_aim.internals), so this test guards it on every
Aim version in CI: a fresh process reads the data through Aim's public SDK only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mltrack
from mltrack_aim import configure_aim_backend

from _child import run_python

READER = """
import json, math
import aim
from aim.storage.context import Context
repo = aim.Repo({repo!r})
run = repo.get_run({run_id!r})
out = {{"infos": sorted(([n, c.to_dict()] for n, c, _ in run.iter_metrics_info()), key=json.dumps)}}
for name, ctx in (("loss", {{}}), ("loss", {{"subset": "val"}}), ("acc", {{}})):
    m = run.get_metric(name, Context(ctx))
    steps, (values, epochs, times) = m.data.numpy()
    key = name + json.dumps(ctx, sort_keys=True)
    out[key] = dict(
        steps=steps.tolist(), values=[None if math.isnan(v) else v for v in values.tolist()],
        times=times.tolist(),
    )
trace = run.meta_run_tree["traces"]
ctx_idx = {{json.dumps(c.to_dict(), sort_keys=True): c.idx for _, c, _ in run.iter_metrics_info()}}
loss_meta = trace[ctx_idx["{{}}"]]["loss"]
out["loss_meta"] = {{k: loss_meta.get(k) for k in ("first", "first_step", "last", "last_step", "min", "max")}}
found = [m.name for m in repo.query_metrics(
    "metric.name == 'loss' and metric.context.subset == 'val'", report_mode=0
).iter()]
out["query_metrics"] = found
print(json.dumps(out))
"""


def _log(aim_repo: Path) -> tuple[str, dict[int, float]]:
    configure_aim_backend(repo_path=aim_repo, experiment_name="batch")
    expected: dict[int, float] = {}
    with mltrack.start_run() as run:
        # Out of order, repeated steps (last wins), a NaN, several flushes.
        for step in [5, 1, 3, *range(6, 3000), 5]:
            value = 1.0 / (step + 1) if step != 100 else math.nan
            if step == 5 and step in expected:
                value = 42.0
            run.log_metric("loss", value, step=step)
            run.log_metric("loss", value * 2, step=step, context={"subset": "val"})
            expected[step] = value
            if step % 1000 == 0:
                mltrack.factory.tracking_session().flush()
        run.log_metric("acc", 0.5, step=0)
    mltrack.factory.reset()
    return run.id, expected


@pytest.mark.parametrize("batched", ["1", "0"], ids=["batch-path", "run.track"])
def test_metric_batches_read_back_with_aims_sdk_in_a_fresh_process(
    aim_repo: Path, monkeypatch: pytest.MonkeyPatch, batched: str
) -> None:
    from mltrack_aim.batch import batch_path_enabled  # imports aim: not at collection

    monkeypatch.setenv("MLTRACK_AIM_BATCH", batched)
    assert batch_path_enabled() is (batched == "1")
    run_id, expected = _log(aim_repo)
    got = run_python(READER.format(repo=str(aim_repo), run_id=run_id))
    steps = sorted(expected)
    values = [None if math.isnan(expected[s]) else expected[s] for s in steps]
    assert got["loss{}"]["steps"] == steps
    assert got["loss{}"]["values"] == values
    assert got['loss{"subset": "val"}']["values"] == [None if v is None else v * 2 for v in values]
    assert got["acc{}"] == {"steps": [0], "values": [0.5], "times": got["acc{}"]["times"]}
    times = got["loss{}"]["times"]
    assert all(t > 1e9 for t in times)  # real per-point wall-clock times, not zeros
    assert sorted(map(json.dumps, got["infos"])) == sorted(
        map(json.dumps, [["acc", {}], ["loss", {}], ["loss", {"subset": "val"}]])
    )
    finite = [v for v in values if v is not None]
    assert got["loss_meta"] == {
        "first": 1.0 / 6,
        "first_step": 5,
        "last": expected[2999],
        "last_step": 2999,
        "min": min(finite),
        "max": max(finite),
    }
    assert got["query_metrics"] == ["loss"]


def test_bulk_column_reads_equal_aims_own_reader(aim_repo) -> None:
    """The NumPy column reader returns exactly what Aim's metric.data.numpy() returns."""
    import math

    import numpy as np
    from aim import Repo
    from aim.sdk.run import Run

    from mltrack_aim.internals import read_columns

    repo = Repo.from_path(str(aim_repo))
    run = Run(repo=repo, experiment="columns", system_tracking_interval=None, capture_terminal_logs=False)
    for step in [5, 1, 3, 0, 2, 4, 1000, 7]:
        run.track(step * 0.5 if step != 3 else math.nan, name="m", step=step)
        run.track(step, name="ints", step=step)  # an int sequence, as plain Aim writes it
    for name in ("m", "ints"):
        metric = next(
            m for n, ctx, _ in run.iter_metrics_info() for m in [run.get_metric(n, ctx)] if n == name
        )
        steps, (values, _epochs, times) = metric.data.numpy()
        columns = read_columns(metric.series_tree)
        assert columns is not None
        np.testing.assert_array_equal(columns[0], steps)
        np.testing.assert_array_equal(columns[1], np.asarray(values, dtype=np.float64))
        np.testing.assert_array_equal(columns[2], np.asarray(times, dtype=np.float64))
    run.close()
