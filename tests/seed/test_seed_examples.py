"""The seed README's examples, unchanged but for imports, on every backend (memory, aim, mlflow).

Only the configuration differs per backend (see conftest.py): the examples themselves are
the same code for each, as the seed promises ("switch between tracking systems without
changing application code").
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import mltrack
from mltrack import (
    ArtifactType,
    ExperimentStatus,
    TrainingMetrics,
    get_experiment_repository,
    get_ml_tracker,
    health_check,
)
from mltrack.factory import experiment_repository


def test_basic_experiment_tracking(backend: str, tmp_path: Path) -> None:
    (tmp_path / "best_model.zip").write_bytes(b"weights")

    async def example():
        # Get a tracker instance
        tracker = await get_ml_tracker()

        # Start a new experiment run
        run = await tracker.create_run(
            experiment_name="PPO_EUR_USD_Training",
            config={"agent_type": "PPO", "learning_rate": 0.0003, "symbol": "EUR/USD", "timesteps": 50000},
        )

        # Log metrics during training
        await tracker.log_metrics(
            run, TrainingMetrics(step=1000, loss=0.045, reward=1250.5, episode_length=100)
        )

        # Log custom metrics
        await tracker.log_metric(run, "win_rate", 0.68, step=1000)

        # Save model artifacts
        await tracker.log_artifact(run, "best_model.zip", ArtifactType.MODEL)

        # Finish the experiment
        await tracker.finish_run(run, status=ExperimentStatus.COMPLETED)
        return run

    run = asyncio.run(example())

    async def check():
        repo = await get_experiment_repository()
        exp = await repo.get_experiment(run.id)
        assert exp.status is ExperimentStatus.COMPLETED
        assert exp.experiment_name == "PPO_EUR_USD_Training"
        assert exp.config["learning_rate"] == 0.0003
        assert exp.final_metrics == {
            "loss": 0.045,
            "reward": 1250.5,
            "episode_length": 100.0,
            "win_rate": 0.68,
        }
        (artifact,) = await repo.list_artifacts(run.id)
        assert artifact.artifact_type is ArtifactType.MODEL
        assert Path(artifact.file_path).read_bytes() == b"weights"

    asyncio.run(check())


def _seed_runs() -> None:
    async def record():
        tracker = await get_ml_tracker()
        for i, reward in enumerate([1500.0, 2150.0, 900.0]):
            run = await tracker.create_run(experiment_name="PPO EUR/USD Training", config={"seed": i})
            for step in range(0, 5000, 1000):
                await tracker.log_metrics(run, TrainingMetrics(step=step, loss=1 / (step + 1), reward=reward))
            await tracker.finish_run(run, status=ExperimentStatus.COMPLETED, final_metrics={"reward": reward})
        await tracker.create_run(experiment_name="still running")

    asyncio.run(record())


def test_experiment_repository_analysis(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    _seed_runs()

    async def example():
        # Get repository for querying experiments
        repo = await get_experiment_repository()

        # Get all experiments
        experiments = await repo.list_experiments()
        for exp in experiments:
            print(f"{exp.name}: {exp.status} - Final reward: {exp.final_metrics.get('reward', 'N/A')}")

        # Get specific experiment
        experiment = await repo.get_experiment(experiments[-1].experiment_id)
        print(f"Duration: {experiment.duration}")
        print(f"Final metrics: {experiment.final_metrics}")

        # Get experiment metrics over time
        metrics = await repo.get_experiment_metrics(experiment.experiment_id)
        for metric in metrics:
            print(f"Step {metric.step}: Loss={metric.value}")

        # Compare experiments
        experiments = await repo.list_experiments(status=ExperimentStatus.COMPLETED)
        best_experiment = max(experiments, key=lambda x: x.final_metrics.get("reward", 0))
        print(
            f"Best experiment: {best_experiment.name} with reward {best_experiment.final_metrics['reward']}"
        )

    asyncio.run(example())
    out = capsys.readouterr().out
    assert "still running: running - Final reward: N/A" in out
    assert out.count("PPO EUR/USD Training: completed") == 3
    assert "Step 4000: Loss=" in out
    assert "Best experiment: PPO EUR/USD Training with reward 2150.0" in out


def test_complete_training_workflow_with_custom_metrics(backend: str) -> None:
    async def example():
        tracker = await get_ml_tracker()
        run = await tracker.create_run(
            experiment_name="PPO_EUR_USD_Optimization",
            config={"agent_type": "PPO", "learning_rate": 0.0003, "batch_size": 2048, "symbol": "EUR/USD"},
        )
        for episode in range(10):
            await tracker.log_metrics(
                run,
                TrainingMetrics(
                    step=episode,
                    reward=episode * 10.0,
                    trades_count=3,
                    win_rate=0.5,
                    sharpe_ratio=1.0 + episode / 10,
                    max_drawdown=0.1,
                ),
            )
        await tracker.finish_run(
            run,
            status=ExperimentStatus.COMPLETED,
            final_metrics={
                "total_reward": 5250.75,
                "win_rate": 0.684,
                "sharpe_ratio": 1.42,
                "max_drawdown": 0.088,
            },
        )
        repo = await get_experiment_repository()
        all_experiments = await repo.list_experiments()
        best_exp = max(all_experiments, key=lambda x: x.final_metrics.get("sharpe_ratio", 0))
        metrics = await repo.get_experiment_metrics(best_exp.experiment_id)
        rewards = [m.value for m in metrics if m.name == "reward"]
        return best_exp, rewards

    best, rewards = asyncio.run(example())
    assert best.final_metrics["sharpe_ratio"] == 1.42
    assert rewards == [i * 10.0 for i in range(10)]


def test_configuration_by_environment_variables(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    mltrack.reset_configuration()
    monkeypatch.setenv("ML_TRACKING_BACKEND", backend)
    monkeypatch.setenv("ML_EXPERIMENT_NAME", "AgenticTrading")
    if backend == "aim":
        aim_repo = request.getfixturevalue("aim_repo")
        monkeypatch.setenv("ML_STORAGE_PATH", "./aim_logs")
        monkeypatch.setenv("AIM_REPO_PATH", str(aim_repo))
    elif backend == "mlflow":
        monkeypatch.setenv("ML_STORAGE_PATH", "./mlflow_logs")
    with mltrack.start_run(config={"a": 1}) as run:
        run.log_metric("loss", 0.5, step=0)
    got = experiment_repository().get_experiment_sync(run.id)
    assert got.experiment_name == "AgenticTrading"
    if backend == "aim":
        assert (aim_repo / ".aim" / "meta" / "chunks" / run.id).is_dir()  # AIM_REPO_PATH wins
    elif backend == "mlflow":  # ML_STORAGE_PATH is the folder of MLflow's SQLite store
        with sqlite3.connect(tmp_path / "mlflow_logs" / "mlflow.db") as db:
            (name,) = db.execute(
                "SELECT e.name FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                "JOIN experiments e ON e.experiment_id = r.experiment_id "
                "WHERE t.key = 'mltrack.run_id' AND t.value = ?",
                (run.id,),
            ).fetchone()
        assert name == "AgenticTrading"


def test_health_monitoring(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async def example():
        health = await health_check()
        print(f"Tracking system healthy: {health.is_healthy}")
        if not health.is_healthy:
            print(f"Issues: {health.issues}")
        return health

    health = asyncio.run(example())
    assert health.is_healthy, health.issues
    details = health.details["backends"][backend]
    if backend == "memory":
        assert details["persistent"] is False
    elif backend == "aim":
        aim_repo = request.getfixturevalue("aim_repo")
        assert details["repo"] == str(aim_repo.resolve())
        assert details["writable"] is True
        assert details["aim_version"].startswith("3.")
        assert details["index"]["runs"] == 0
    else:
        assert details["tracking_uri"] == f"sqlite:///{(tmp_path / 'mlflow_logs' / 'mlflow.db').resolve()}"
        assert details["writable"] is True
        assert details["mlflow_version"].startswith("3.")
        assert details["experiments"] == 1  # MLflow's own "Default"
