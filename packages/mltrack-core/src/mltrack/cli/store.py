"""The configured stores as the commands read them: opened on demand, closed when the command ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mltrack.config import TrackingConfig
    from mltrack.repository import ExperimentRepository


def read_config() -> TrackingConfig:
    """The configured stores, to be read: where there is none, that is an error, none is created."""
    import attrs

    from mltrack.config import current_config

    return attrs.evolve(current_config(), must_exist=True)


def open_repo() -> ExperimentRepository:
    """The configured stores, opened for reading until the command ends."""
    from mltrack.factory import open_repository

    repo = open_repository(read_config())
    click.get_current_context().call_on_close(repo.close)
    return repo
