"""Fixtures of the CLI tests."""

import os

import pytest


@pytest.fixture
def env(tmp_path):
    """Keep the user data, cache and log dirs of the child inside the test's folder."""
    return os.environ | {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PNEUMOFL_DB_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }
