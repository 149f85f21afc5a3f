"""The plugin tutorial's backend (docs/plugins/tutorial) passes the whole conformance suite.

It is installed as the tutorial says: its module on the path, and the entry point its
``pyproject.toml`` declares in a ``.dist-info`` folder beside it (what ``pip install`` writes),
visible to this process and to the child processes the suite starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mltrack
from mltrack.config import TrackingConfig
from mltrack.errors import ConfigurationError
from mltrack.testing.conformance import BackendConformance

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "plugins" / "tutorial"
MAX_LINES = 150


def _toml_table(path: Path, table: str) -> dict[str, str]:
    """The ``key = "text"`` lines of one table of a TOML file (tomllib is Python 3.11+)."""
    body = path.read_text().split(f"\n[{table}]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([^"]*)"$', body, flags=re.MULTILINE))


@pytest.fixture(scope="module", autouse=True)
def installed_tutorial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A site folder holding the tutorial's entry point, on ``sys.path`` and ``PYTHONPATH``."""
    project = _toml_table(TUTORIAL / "pyproject.toml", "project")
    entry_points = _toml_table(TUTORIAL / "pyproject.toml", "project.entry-points.mltrack")
    site = tmp_path_factory.mktemp("tutorial_site")
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[mltrack]\n{points}")
    paths = [str(site), str(TUTORIAL)]
    with pytest.MonkeyPatch.context() as mp:
        for path in reversed(paths):
            mp.syspath_prepend(path)
        mp.setenv("PYTHONPATH", os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]))
        yield site


class TestTutorialBackend(BackendConformance):
    """The unchanged suite; writes from this process (the backend registers no writer process)."""

    @pytest.fixture
    def tracking_config(self, tmp_path: Path) -> TrackingConfig:
        return TrackingConfig(backends=("jsonl",), storage_path=str(tmp_path / "store"), strict=True)


def test_the_tutorial_backend_fits_in_150_lines() -> None:
    lines = len((TUTORIAL / "mltrack_jsonl.py").read_text().splitlines())
    assert lines <= MAX_LINES, f"docs/plugins/tutorial/mltrack_jsonl.py has {lines} lines"


def test_every_piece_of_code_the_tutorial_shows_is_the_modules_own() -> None:
    """docs/plugins/README.md shows the module in pieces (blocks opening ``# from mltrack_jsonl.py``)."""
    module = (TUTORIAL / "mltrack_jsonl.py").read_text()
    guide = (TUTORIAL.parent / "README.md").read_text()
    pieces = re.findall(r"```python\n# from mltrack_jsonl.py\n(.*?)```", guide, flags=re.DOTALL)
    assert len(pieces) >= 10
    for piece in pieces:
        assert piece in module, f"docs/plugins/README.md shows code that is not in mltrack_jsonl.py:\n{piece}"


def test_the_entry_point_announces_the_backend_with_its_options() -> None:
    from mltrack.plugins import get_plugin_host

    registration = get_plugin_host().backends()["jsonl"]
    assert registration.plugin == "jsonl"
    assert registration.persistent and registration.preflight is not None
    stores_and_reads = {
        *("mltrack_create_run", "mltrack_log_metrics", "mltrack_log_params", "mltrack_log_artifact"),
        *("mltrack_set_tags", "mltrack_finish_run", "mltrack_delete_run", "mltrack_list_runs"),
        *("mltrack_get_run", "mltrack_get_metrics", "mltrack_list_artifacts", "mltrack_health"),
        "mltrack_resume_run",
    }
    assert set(registration.hooks()) == stores_and_reads


def test_a_mistyped_option_names_the_right_one() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown option 'rot' for backend 'jsonl': did you mean 'root'"
    ):
        mltrack.configure_backend("jsonl", rot="/tmp/x")


def test_the_root_option_wins_over_the_storage_path(tmp_path: Path) -> None:
    mltrack.configure_backend("jsonl", root=str(tmp_path / "own"), storage_path=str(tmp_path / "shared"))
    with mltrack.start_run("tutorial") as run:
        run.log_metrics({"loss": 0.5}, step=1)
    assert (tmp_path / "own" / run.id / "run.json").is_file()
    assert not (tmp_path / "shared").exists()


def test_a_writer_process_stores_a_run_too(tmp_path: Path) -> None:
    config = TrackingConfig(backends=("jsonl",), storage_path=str(tmp_path), strict=True, writer="process")
    mltrack.configure(**{f: getattr(config, f) for f in ("backends", "storage_path", "strict", "writer")})
    with mltrack.start_run("tutorial", {"lr": 0.1}) as run:
        for step in range(100):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    with mltrack.open_repository(config) as repo:
        summary = repo.get_experiment_sync(run.id)
        history = repo.get_experiment_metrics_sync(run.id)
    assert summary.status is mltrack.ExperimentStatus.COMPLETED and summary.config == {"lr": 0.1}
    assert list(history.series("loss").steps) == list(range(100))


def test_mltrack_health_shows_each_detail_key_once(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    env = {**os.environ, "ML_TRACKING_BACKEND": "jsonl", "ML_STORAGE_PATH": str(tmp_path / "store")}
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack", "health"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"  jsonl.root: {tmp_path / 'store'}" in proc.stdout.splitlines()
    assert "jsonl.runs: 0" in proc.stdout
    assert "jsonl.jsonl" not in proc.stdout
