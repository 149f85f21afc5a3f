"""An unknown backend name: the error says which package to install, or what keeps it from loading."""

from __future__ import annotations

import pytest

from mltrack.config import TrackingConfig
from mltrack.errors import UnknownBackendError
from mltrack.plugins import PluginHost


def _host_with_memory_only() -> PluginHost:
    # No entry points: as on a machine where only mltrack-core is installed (memory is built in).
    return PluginHost(load_entry_points=False)


@pytest.mark.parametrize(
    ("backend", "distribution"),
    [
        ("mlflow", "mltrack-mlflow"),
        ("aim", "mltrack-aim"),
        ("tensorboard", "mltrack-tensorboard"),
        ("wandb", "mltrack-wandb"),
    ],
)
def test_a_first_party_backend_not_installed_names_its_own_package(backend: str, distribution: str) -> None:
    with pytest.raises(UnknownBackendError) as raised:
        _host_with_memory_only().select_backends(TrackingConfig(backends=(backend,)))
    message = str(raised.value)
    assert f"pip install {distribution}" in message
    others = {"mltrack-aim", "mltrack-mlflow", "mltrack-tensorboard", "mltrack-wandb"} - {distribution}
    assert not any(f"pip install {other}" in message for other in others)


def test_a_blocked_first_party_backend_says_the_block_list_keeps_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("mltrack_mlflow")
    monkeypatch.setenv("MLTRACK_BLOCK_PLUGINS", "mlflow")
    with pytest.raises(UnknownBackendError, match="MLTRACK_BLOCK_PLUGINS blocks it"):
        PluginHost().select_backends(TrackingConfig(backends=("mlflow",)))


def test_a_first_party_backend_left_out_of_the_allow_list_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mltrack_mlflow")
    monkeypatch.setenv("MLTRACK_LOAD_PLUGINS", "memory")
    with pytest.raises(UnknownBackendError, match="MLTRACK_LOAD_PLUGINS leaves it out"):
        PluginHost().select_backends(TrackingConfig(backends=("mlflow",)))


def test_a_mistyped_backend_name_gets_a_suggestion() -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'memory'"):
        _host_with_memory_only().select_backends(TrackingConfig(backends=("memroy",)))
