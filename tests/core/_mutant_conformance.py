"""The conformance suite on the backend ``MLTRACK_MUTANT`` names: a mutant of ``_mutants`` or ``memory``.

Not collected by the main run (its name does not start with ``test_``):
``test_conformance_catches_bugs.py`` runs it in a pytest of its own per backend, without the
suite's conftest (which resets the plugin host, and with it the mutants' registration).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _mutants import PLUGIN

from mltrack.config import TrackingConfig
from mltrack.plugins import get_plugin_host
from mltrack.testing.conformance import BackendConformance

get_plugin_host().register(PLUGIN, name="mltrack-mutants")


class TestSelectedBackend(BackendConformance):
    @pytest.fixture
    def tracking_config(self, tmp_path: Path) -> TrackingConfig:
        name = os.environ["MLTRACK_MUTANT"]
        return TrackingConfig(backends=(name,), backend_options={name: {"store": str(tmp_path)}}, strict=True)
