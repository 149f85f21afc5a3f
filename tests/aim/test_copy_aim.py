"""Copying runs out of one Aim repository into another, read back by a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mltrack
from mltrack.factory import open_repository
from mltrack_aim import configure_aim_backend


def test_copy_to_a_fresh_aim_repository_compares_equal_in_a_fresh_process(
    aim_repo: Path, tmp_path: Path
) -> None:
    configure_aim_backend(repo_path=aim_repo)
    model = tmp_path / "policy.zip"
    model.write_bytes(b"policy" * 1000)
    ids = []
    for i in range(3):
        with mltrack.start_run("copy-me", {"seed": i, "opt": {"lr": 0.001}}, tags=[f"seed{i}"]) as run:
            for step in range(2000):
                run.log_metric("loss", 1.0 / (step + 1 + i), step=step)
            run.log_metric("reward", float(i), step=0, context={"subset": "eval"})
            run.log_artifact(model, "model", name="policy.zip")
        ids.append(run.id)
    mltrack.factory.reset()
    backup = tmp_path / "backup"

    with (
        open_repository("aim", repo_path=str(aim_repo)) as src,
        open_repository("aim", repo_path=str(backup)) as dst,
    ):
        report = src.copy_to_sync(dst)
        again = src.copy_to_sync(dst)

    assert sorted(report.copied) == sorted(ids) and report.points == 3 * 2001
    assert sorted(again.skipped) == sorted(ids) and again.points == 0
    script = """
import json, sys
from pathlib import Path
from mltrack.factory import open_repository
out = {}
with open_repository("aim", repo_path=sys.argv[1]) as repo:
    for s in repo.list_experiments_sync():
        h = repo.get_experiment_metrics_sync(s.experiment_id)
        out[s.experiment_id] = {
            "summary": [s.name, s.experiment_name, s.status.value, s.start_time.isoformat(),
                        s.end_time.isoformat(), s.config, sorted(s.tags), s.final_metrics],
            "points": sorted([p.name, sorted(p.context.items()), p.step, p.value, p.timestamp.timestamp()] for p in h),
            "artifacts": sorted([a.name, a.sha256, Path(a.file_path).read_bytes().hex()]
                                for a in repo.list_artifacts_sync(s.experiment_id)),
        }
print(json.dumps(out))
"""

    def read(repo: Path) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-c", script, str(repo)], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]

    original, copied = read(aim_repo), read(backup)
    assert sorted(copied) == sorted(ids)
    assert copied == original
