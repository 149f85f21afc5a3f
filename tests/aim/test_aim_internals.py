"""Aim's private API stays behind one door, and a newer Aim falls back to the public API.

mltrack-aim's fast paths (bulk metric writes and reads) reach into Aim's storage; they run
only on the Aim releases they were verified with. These tests make the version gate read a
newer Aim and check that a real run still round-trips completely through the public
fallbacks, and that no module but ``mltrack_aim.internals`` touches Aim's private API.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import mltrack_aim
from mltrack.config import BackendConfig
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    MetricBatch,
    ModelArtifact,
    RunFilter,
)

PACKAGE = Path(mltrack_aim.__file__).parent


def _batch(
    name: str, steps: list[int], values: list[float], context: dict[str, str] | None = None
) -> MetricBatch:
    ctx = tuple(sorted((context or {}).items()))
    now = time.time()
    return MetricBatch(
        keys=[(name, ctx)],
        key_index=[0] * len(steps),
        steps=steps,
        values=values,
        timestamps=[now + i for i in range(len(steps))],
    )


def _backend(root: Path) -> Any:
    from mltrack_aim.backend import AimBackend

    return AimBackend.from_config(BackendConfig("aim", options={"repo_path": str(root)}))


def _forbid(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} used although the version gate says the Aim is not verified")

    monkeypatch.setattr(module, name, refuse)


def test_the_installed_aim_is_verified_and_takes_the_fast_paths() -> None:
    from mltrack_aim import internals

    assert internals.verified(), f"aim {internals.aim_version()} is installed; VERIFIED={internals.VERIFIED}"
    assert internals.fast_paths()


def test_a_newer_aim_uses_the_public_api_and_keeps_every_part_of_a_run(
    aim_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mltrack_aim import internals

    monkeypatch.setattr(internals, "aim_version", lambda: "3.31.0")
    assert not internals.verified() and not internals.fast_paths()
    for name in ("write_sequence", "read_columns", "_write_local", "_track_each"):
        _forbid(monkeypatch, internals, name)

    artifact_file = tmp_path / "model.bin"
    artifact_file.write_bytes(b"weights")
    run = ExperimentRun(
        id=uuid.uuid4().hex[:24],
        experiment_name="newer-aim",
        config={"lr": 0.001, "layers": [64, 64]},
        name="fallback",
        tags=("base",),
        description="d",
    )
    backend = _backend(aim_repo)
    try:
        backend.mltrack_create_run(run)
        backend.mltrack_log_metrics(run.id, _batch("loss", [2, 0, 1, 3], [0.5, 1.0, 0.75, math.nan]))
        backend.mltrack_log_metrics(run.id, _batch("loss", [4], [0.25]))
        backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1], [9.0, 8.0], {"subset": "val"}))
        backend.mltrack_log_params(run.id, {"batch_size": 32})
        backend.mltrack_set_tags(run.id, ["extra"])
        backend.mltrack_log_artifact(
            run.id, ModelArtifact("weights/model.bin", ArtifactType.MODEL, str(artifact_file), size=7)
        )
        backend.mltrack_finish_run(
            run.id, ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {"loss": 0.25}
        )
    finally:
        backend.close()

    reader = _backend(aim_repo)  # a second backend: nothing comes from the writer's memory
    try:
        summary = reader.mltrack_get_run(run.id)
        assert summary is not None
        assert summary.status is ExperimentStatus.COMPLETED
        assert summary.end_time is not None
        assert summary.name == "fallback" and summary.description == "d"
        assert summary.config == {"lr": 0.001, "layers": [64, 64], "batch_size": 32}
        assert set(summary.tags) == {"base", "extra"}
        assert summary.final_metrics == {"loss": 0.25}
        assert [s.experiment_id for s in reader.mltrack_list_runs(RunFilter())] == [run.id]

        series = {
            (s.name, tuple(sorted(s.context.items()))): s for s in reader.mltrack_get_metrics(run.id, None)
        }
        loss = series[("loss", ())]
        assert list(loss.steps) == [0, 1, 2, 3, 4]
        assert list(loss.values)[:3] == [1.0, 0.75, 0.5] and math.isnan(loss.values[3])
        assert loss.values[4] == 0.25
        val = series[("loss", (("subset", "val"),))]
        assert list(val.steps) == [0, 1] and list(val.values) == [9.0, 8.0]

        (artifact,) = reader.mltrack_list_artifacts(run.id) or []
        assert artifact.name == "weights/model.bin"
        assert artifact.artifact_type is ArtifactType.MODEL
        assert Path(artifact.file_path).read_bytes() == b"weights"
        assert reader.mltrack_health().details["aim_internals_verified"] is False
    finally:
        reader.close()


# --- one door -----------------------------------------------------------------------------

# Names that belong to Aim's storage internals: only mltrack_aim.internals may use them.
_PRIVATE_NAMES = re.compile(
    r"aimrocks|aim\.storage|aim\.sdk\.base_run|aim\.sdk\.index_manager|ContainerConfig|container_pool"
    r"|request_tree|meta_tree|meta_run_tree|series_tree|sequence_infos|generate_run_hash|_prepare_runs_cache"
)
# An underscore attribute of anything but the module's own objects (self, cls).
_PRIVATE_ATTRIBUTE = re.compile(r"\b(\w+)\._[A-Za-z]")


@pytest.mark.parametrize(
    "module", sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "internals.py"), ids=str
)
def test_no_module_but_internals_touches_aims_private_api(module: str) -> None:
    source = (PACKAGE / module).read_text()
    names = sorted(set(_PRIVATE_NAMES.findall(source)))
    assert not names, f"{module} uses Aim internals {names}: move that code into mltrack_aim/internals.py"
    owners = sorted({m for m in _PRIVATE_ATTRIBUTE.findall(source) if m not in ("self", "cls")})
    assert not owners, f"{module} reads private attributes of {owners}: go through mltrack_aim/internals.py"


def test_a_clean_up_step_that_raises_at_exit_ends_the_process_instead_of_hanging_it(tmp_path: Path) -> None:
    # Aim waits at exit for a signal its clean-up thread sets only if no step raised (a remote
    # run whose server went away raises there): without the guard this child never exits.
    code = f"""
from aim.ext.cleanup import AutoClean
from mltrack_aim.store import open_repo

class ServerGone(AutoClean):
    def _close(self):
        raise ConnectionError("aim server went away")

class Resource:
    pass

repo = open_repo({str(tmp_path / "aim")!r})
resource = Resource()
ServerGone(resource)
print("exiting", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "exiting"
    assert "Aim's clean-up at exit failed: ConnectionError: aim server went away" in done.stderr
