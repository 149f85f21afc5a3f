"""A real Aim repository holding several runs, written through mltrack, for the CLI tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from _cli_helpers import run_cli


@attrs.frozen
class Runs:
    repo: Path
    ppo_fast: str
    ppo_slow: str
    dqn: str


def _record(repo: Path, artifact_dir: Path) -> Runs:
    import mltrack
    from mltrack import factory

    mltrack.configure_backend("aim", repo_path=str(repo))
    ids = []
    for lr, final_reward in ((1e-3, 200.0), (3e-4, 150.0)):
        with mltrack.start_run(
            "ppo-cartpole", {"learning_rate": lr, "gamma": 0.99}, tags=["baseline"]
        ) as run:
            for step in range(100):
                run.log_metrics(
                    {"reward": final_reward * step / 99, "loss": 200.0 / final_reward / (step + 1)},
                    step=step * 10,
                )
            model = artifact_dir / f"model-{lr}.zip"
            model.write_bytes(b"weights" * 1000)
            run.log_artifact(model, "model", name="best_model.zip", metadata={"score": final_reward})
        ids.append(run.id)
    with pytest.raises(RuntimeError), mltrack.start_run("dqn-cartpole", {"learning_rate": 1e-4}) as run:
        run.log_metric("reward", 10.0, step=0)
        raise RuntimeError("diverged")
    factory.reset()
    mltrack.reset_configuration()
    return Runs(repo, ids[0], ids[1], run.id)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Three runs: two PPO (completed, differing learning rates) and one DQN (failed)."""
    root = tmp_path_factory.mktemp("cli")
    return _record(root / "aim_logs", root)


@pytest.fixture
def cli(runs: Runs) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli("ls", "--json")`` runs ``mltrack ls --json`` on the three-run repository."""
    return lambda *args, input=None: run_cli(runs.repo, *args, input=input)
