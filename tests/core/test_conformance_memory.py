"""The conformance suite, run on the in-memory reference backend."""

from __future__ import annotations

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def tracking_config(self, memory_config: TrackingConfig) -> TrackingConfig:
        return memory_config
