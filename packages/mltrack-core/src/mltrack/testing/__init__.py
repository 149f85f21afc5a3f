"""Tools for backend authors: the conformance suite and the in-memory reference backend.

* :mod:`mltrack.testing.conformance`: :class:`~mltrack.testing.conformance.BackendConformance`,
  the pytest tests every backend must pass, and the :class:`~mltrack.testing.conformance.Harness`
  they write and read through (a ``TrackingSession`` and an ``ExperimentRepository`` over one
  backend configuration).
* :mod:`mltrack.memory`: the ``memory`` backend (built in), a complete implementation of the hooks
  in one short module (read it first), and ``clear(store)`` to forget a store's runs.

Prove your backend by subclassing the suite in a test module and giving it a
``tracking_config`` fixture that selects your backend (pytest collects the inherited tests)::

    import pytest
    from mltrack.config import TrackingConfig
    from mltrack.testing.conformance import BackendConformance

    class TestMyStore(BackendConformance):
        @pytest.fixture
        def tracking_config(self, tmp_path):
            return TrackingConfig(backends=("mystore",), storage_path=str(tmp_path), strict=True)

A backend located by its own options rather than ``storage_path`` also overrides
``unusable_config`` (see :mod:`mltrack.testing.conformance`) so its preflight check is tested.
"""
