"""mltrack's runs as TensorBoard itself sees them: its ``EventAccumulator`` in a fresh process, and a
real ``tensorboard`` server on 127.0.0.1 answering its scalars and HParams endpoints."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mltrack.config import TrackingConfig
from mltrack.factory import build_session
from mltrack.models import ExperimentStatus
from mltrack.plugins import get_plugin_host
from mltrack_tensorboard import start_tensorboard

RUNS = {
    "fast": {"lr": 0.1, "agent": "PPO", "net": {"layers": [64, 64]}, "normalize": True},
    "slow": {"lr": 0.001, "agent": "A2C", "net": {"layers": [256]}, "normalize": False},
}
LATE_PARAMS = {"gamma": 0.99}  # logged after create_run and before the first point, as SB3 does
FLAT = {
    name: {
        "lr": cfg["lr"],
        "agent": cfg["agent"],
        "net.layers": json.dumps(cfg["net"]["layers"]),  # type: ignore[index]
        "normalize": cfg["normalize"],
        "gamma": 0.99,
    }
    for name, cfg in RUNS.items()
}
STEPS = 40


def _loss(name: str, step: int) -> float:
    return RUNS[name]["lr"] / (step + 1)  # type: ignore[operator]


def _float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _acc(step: int) -> float:
    return step / STEPS


@pytest.fixture
def two_runs(tb_config: TrackingConfig) -> dict[str, Path]:
    """Two finished runs with different hyperparameters; their folders by run name."""
    host = get_plugin_host()
    session = build_session(tb_config, lambda: host.activate(tb_config), host)
    ids = {}
    try:
        for name, config in RUNS.items():
            run = session.create_run("sweep", config, name=name, description=f"{name} run", tags=["sweep"])
            session.log_params(run, LATE_PARAMS)
            for step in range(STEPS):
                session.log_metric(run, "loss", _loss(name, step), step=step)
                session.log_metric(run, "acc", _acc(step), step=step, context={"subset": "val"})
            session.finish_run(run, ExperimentStatus.COMPLETED)
            ids[name] = run.id
    finally:
        session.close()
    root = Path(tb_config.storage_path or "")
    return {name: root / "sweep" / f"{name}-{run_id}" for name, run_id in ids.items()}


READ_WITH_EVENT_ACCUMULATOR = """
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
from mltrack_tensorboard.backend import read_scalars
from pathlib import Path

out = {}
for folder in sys.argv[1:]:
    acc = ea.EventAccumulator(folder, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
    acc.Reload()
    tensors = {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto).item())) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    texts = sorted(acc.PluginTagToContent("text"))
    files = sorted(p for p in Path(folder).iterdir() if "tfevents" in p.name and not p.name.endswith(".mltrack"))
    mine = {tag: [list(map(int, s)), list(v)] for tag, (s, v, _w) in read_scalars(files).items()}
    out[folder] = {"tensors": tensors, "hparams": hparams, "texts": texts, "mltrack": mine}
print(json.dumps(out))
"""


def test_tensorboards_own_reader_in_a_fresh_process_sees_every_point_and_hyperparameter(
    two_runs: dict[str, Path],
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(READ_WITH_EVENT_ACCUMULATOR), *map(str, two_runs.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, folder in two_runs.items():
        seen = got[str(folder)]
        assert seen["hparams"] == FLAT[name]
        assert seen["texts"] == ["run/description", "run/tags"]
        assert set(seen["tensors"]) == {"loss", "acc{subset=val}"}
        # TensorBoard charts float32; mltrack's reader gives back the float64 logged, same steps.
        loss = seen["tensors"]["loss"]
        assert [s for s, _v in loss] == list(range(STEPS))
        assert all(v == pytest.approx(_loss(name, s), rel=1e-6) for s, v in loss)
        assert seen["mltrack"]["loss"] == [list(range(STEPS)), [_loss(name, s) for s in range(STEPS)]]
        assert seen["mltrack"]["acc{subset=val}"][1] == [_acc(s) for s in range(STEPS)]
        acc = seen["tensors"]["acc{subset=val}"]
        assert [v for _s, v in acc] == pytest.approx([_acc(s) for s in range(STEPS)], rel=1e-6)
        # mltrack's reader equals TensorBoard's: the same steps, the same values once rounded as TensorBoard does.
        for tag, points in seen["tensors"].items():
            steps, values = seen["mltrack"][tag]
            assert [(s, _float32(v)) for s, v in zip(steps, values, strict=True)] == [
                tuple(p) for p in points
            ]


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_tensorboard_server_shows_both_runs_hyperparameters_and_metrics(
    two_runs: dict[str, Path], tb_dir: Path
) -> None:
    runs = {name: folder.relative_to(tb_dir).as_posix() for name, folder in two_runs.items()}
    server = start_tensorboard(tb_dir, reload_interval=1)
    try:
        deadline = time.monotonic() + 60
        while True:  # the data server loads the folder in the background
            tags = _call(server.url + "/data/plugin/scalars/tags")
            if all(len(tags.get(run, {})) == 2 for run in runs.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {run: set(tags.get(run, {})) for run in runs.values()} == {
            run: {"loss", "acc{subset=val}"} for run in runs.values()
        }
        for name, run in runs.items():
            query = urllib.parse.urlencode({"run": run, "tag": "loss"})
            points = _call(f"{server.url}/data/plugin/scalars/scalars?{query}")
            assert [step for _wall, step, _value in points] == list(range(STEPS))
            assert [v for _w, _s, v in points] == pytest.approx(
                [_loss(name, s) for s in range(STEPS)], rel=1e-6
            )

        experiment = _call(server.url + "/data/plugin/hparams/experiment", {"experimentName": ""})
        assert {h["name"] for h in experiment["hparamInfos"]} == set(FLAT["fast"])
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {"loss", "acc{subset=val}"}
        groups = _call(
            server.url + "/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 100,
            },
        )
        by_run = {g["sessions"][0]["name"]: g for g in groups["sessionGroups"]}
        assert set(by_run) == set(runs.values())
        for name, run in runs.items():
            group = by_run[run]
            assert group["hparams"] == FLAT[name]
            assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
            finals = {m["name"]["tag"]: (m["trainingStep"], m["value"]) for m in group["metricValues"]}
            assert finals["loss"] == (STEPS - 1, pytest.approx(_loss(name, STEPS - 1), rel=1e-6))
            assert finals["acc{subset=val}"] == (STEPS - 1, pytest.approx(_acc(STEPS - 1), rel=1e-6))
    finally:
        server.stop()
    assert not server.group_alive()
