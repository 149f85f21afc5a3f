"""Tools for backend authors: the conformance suite every mltrack backend passes.

* :mod:`mltrack.testing.conformance`: :class:`~mltrack.testing.conformance.BackendConformance`,
  the pytest tests (subclass it with a ``tracking_config`` fixture), and the
  :class:`~mltrack.testing.conformance.Harness` they write and read through: a
  ``TrackingSession`` and an ``ExperimentRepository`` over one backend configuration, with
  ``Harness.read(hook, **kwargs)`` for a read hook's own answer (None for an unknown run).
* The reference backend is :mod:`mltrack.memory` (built in; ``clear(store)`` forgets a store's
  runs); ``mltrack.testing.memory`` is its former import path.

Prove your backend by subclassing the suite in a test module and giving it a
``tracking_config`` fixture that selects your backend (pytest collects the inherited tests)::

    import pytest
    from mltrack.config import TrackingConfig
    from mltrack.testing.conformance import BackendConformance

    class TestMyStore(BackendConformance):
        @pytest.fixture
        def tracking_config(self, tmp_path):
            return TrackingConfig(backends=("mystore",), storage_path=str(tmp_path), strict=True)

The tests that need a second process (a run read back elsewhere, a killed trainer's run
reading CRASHED) run only for a backend registered ``persistent=True``; their child processes
find it through its entry point, so install the plugin's distribution first. A subclass tunes
``many_points`` (points that must arrive whole), ``crash_timeout`` (how long a killed
trainer's run may read RUNNING) and ``unusable_config()`` (a location the backend's
``preflight`` must refuse; override it for a backend located by its own options).
``docs/plugins/README.md`` builds a backend from zero against this suite, on the helpers of
:mod:`mltrack.authoring`.
"""
