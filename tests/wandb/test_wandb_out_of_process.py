"""The training process never imports wandb: the backend runs in mltrack's writer process."""

from __future__ import annotations

from pathlib import Path

from _child import run_python


def test_a_trainer_logging_to_wandb_never_imports_wandb(wandb_root: Path) -> None:
    got = run_python(
        """
        import json, sys, mltrack
        with mltrack.start_run("out-of-process", {"lr": 0.1}) as run:
            for step in range(100):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
        print(json.dumps(dict(run=run.id, imported=sorted(m for m in sys.modules if m.split(".")[0] == "wandb"))))
        """,
        env={"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(wandb_root)},
    )
    assert got["imported"] == []
    assert len(list((wandb_root / "wandb").glob(f"offline-run-*-{got['run']}"))) == 1
