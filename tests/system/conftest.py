"""System-metrics tests run with mltrack's default (sampling on), which the root conftest turns off."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _system_metrics_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLTRACK_SYSTEM_METRICS", raising=False)
