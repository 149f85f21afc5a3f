"""Throwaway plugin distributions for tests: built from source here, installed into a temp dir."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from _child import env_without

GOOD_PLUGIN = '''
"""A store that appends every hook call to a JSON-lines file (the path comes from its options)."""
import json
from mltrack import hookimpl


POISON = -13.0013


class FileLogBackend:
    def __init__(self, config):
        self.path = config.options.get("path") or config.storage_path

    def _write(self, hook, **data):
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"hook": hook, **data}, default=str) + "\\n")

    @hookimpl
    def mltrack_create_run(self, run):
        self._write("create_run", run_id=run.id, experiment=run.experiment_name)

    @hookimpl
    def mltrack_log_metrics(self, run_id, batch):
        if POISON in batch.values:  # a store that crashes its process on some data
            import os
            os._exit(13)
        self._write("log_metrics", run_id=run_id, values=list(batch.values), steps=list(batch.steps))

    @hookimpl
    def mltrack_finish_run(self, run_id, status, end_time, final_metrics):
        self._write("finish_run", run_id=run_id, status=status.value)


@hookimpl
def mltrack_register_backends(register):
    register("filelog", FileLogBackend, description="JSON lines, for the plugin test")


POINTS_SEEN = []


@hookimpl
def mltrack_log_metrics(run_id, batch):
    # An observer: sees every batch written to any backend.
    POINTS_SEEN.extend(batch.values)
'''

BROKEN_PLUGIN = """
raise RuntimeError("this plugin is broken on purpose")
"""


def _write_dist(root: Path, dist: str, module: str, ep_name: str, source: str) -> Path:
    pkg = root / dist
    pkg.mkdir()
    (pkg / f"{module}.py").write_text(textwrap.dedent(source))
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{dist}"
            version = "1.2.3"

            [project.entry-points.mltrack]
            {ep_name} = "{module}"

            [tool.hatch.build.targets.wheel]
            include = ["{module}.py"]
            """
        )
    )
    return pkg


def build_plugins(root: Path) -> Path:
    """Build and install two throwaway plugin distributions into ``root/site``."""
    good = _write_dist(root, "mltrack-filelog", "mltrack_filelog", "filelog", GOOD_PLUGIN)
    broken = _write_dist(root, "mltrack-broken", "mltrack_broken", "broken", BROKEN_PLUGIN)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(good),
            str(broken),
        ],
        check=True,
    )
    return site


def run_py(plugin_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = env_without(("ML_", "MLTRACK_"))
    full_env["PYTHONPATH"] = str(plugin_path)
    full_env.setdefault("MLTRACK_LOAD_PLUGINS", "filelog,broken,memory")
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env
    )
