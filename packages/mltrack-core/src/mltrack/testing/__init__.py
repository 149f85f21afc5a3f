"""Tools for backend authors: the conformance suite and the in-memory reference backend.

Run the conformance suite against your backend by name from a test module::

    from mltrack.testing.conformance import *  # noqa: F403  (pytest collects the tests)

    import pytest

    @pytest.fixture
    def backend_config(tmp_path):
        return {"backend": "yourname", "storage_path": str(tmp_path), "options": {}}
"""
