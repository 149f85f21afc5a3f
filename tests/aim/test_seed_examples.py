"""The seed README's examples, unchanged but for imports, on a real Aim repository."""

from __future__ import annotations

import asyncio
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
from mltrack_aim import configure_aim_backend


@pytest.fixture(autouse=True)
def aim_configured(aim_repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    configure_aim_backend(repo_path=str(aim_repo), experiment_name="AgenticTrading")


def test_quick_start_basic_experiment_tracking(tmp_path: Path) -> None:
    (tmp_path / "best_model.zip").write_bytes(b"weights")

    async def example():
        tracker = await get_ml_tracker()
        run = await tracker.create_run(
            experiment_name="PPO_EUR_USD_Training",
            config={"agent_type": "PPO", "learning_rate": 0.0003, "symbol": "EUR/USD", "timesteps": 50000},
        )
        await tracker.log_metrics(
            run, TrainingMetrics(step=1000, loss=0.045, reward=1250.5, episode_length=100)
        )
        await tracker.log_metric(run, "win_rate", 0.68, step=1000)
        await tracker.log_artifact(run, "best_model.zip", ArtifactType.MODEL)
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


def test_experiment_repository_analysis(capsys: pytest.CaptureFixture[str]) -> None:
    async def record():
        tracker = await get_ml_tracker()
        for i, reward in enumerate([1500.0, 2150.0, 900.0]):
            run = await tracker.create_run(experiment_name="PPO EUR/USD Training", config={"seed": i})
            for step in range(0, 5000, 1000):
                await tracker.log_metrics(run, TrainingMetrics(step=step, loss=1 / (step + 1), reward=reward))
            await tracker.finish_run(run, status=ExperimentStatus.COMPLETED, final_metrics={"reward": reward})
        await tracker.create_run(experiment_name="still running")

    asyncio.run(record())

    async def example():
        repo = await get_experiment_repository()
        experiments = await repo.list_experiments()
        for exp in experiments:
            print(f"{exp.name}: {exp.status} - Final reward: {exp.final_metrics.get('reward', 'N/A')}")
        experiment = await repo.get_experiment(experiments[-1].experiment_id)
        print(f"Duration: {experiment.duration}")
        print(f"Final metrics: {experiment.final_metrics}")
        metrics = await repo.get_experiment_metrics(experiment.experiment_id)
        for metric in metrics:
            print(f"Step {metric.step}: Loss={metric.value}")
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


def test_complete_training_workflow_with_custom_metrics() -> None:
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


def test_configuration_by_environment_variables(aim_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mltrack.reset_configuration()
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim")
    monkeypatch.setenv("ML_STORAGE_PATH", "./aim_logs")
    monkeypatch.setenv("ML_EXPERIMENT_NAME", "AgenticTrading")
    monkeypatch.setenv("AIM_REPO_PATH", str(aim_repo))
    with mltrack.start_run(config={"a": 1}) as run:
        run.log_metric("loss", 0.5, step=0)
    got = mltrack.factory.experiment_repository().get_experiment_sync(run.id)
    assert got.experiment_name == "AgenticTrading"
    assert (aim_repo / ".aim" / "meta" / "chunks" / run.id).is_dir()  # AIM_REPO_PATH wins


def test_health_monitoring(aim_repo: Path) -> None:
    async def example():
        health = await health_check()
        print(f"Tracking system healthy: {health.is_healthy}")
        if not health.is_healthy:
            print(f"Issues: {health.issues}")
        return health

    health = asyncio.run(example())
    assert health.is_healthy, health.issues
    details = health.details["backends"]["aim"]
    assert details["repo"] == str(aim_repo.resolve())
    assert details["writable"] is True
    assert details["aim_version"].startswith("3.")
    assert details["index"]["runs"] == 0
