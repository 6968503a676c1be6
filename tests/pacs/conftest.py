"""Fixtures of the PACS tests: one Orthanc per module, and a CLI environment kept inside the test's folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.pacs.orthanc import Orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if shutil.which("Orthanc") is None and not os.path.exists("/usr/sbin/Orthanc"):
        pytest.fail("Debian's orthanc package is not installed: .ci/run installs it (apt-get install orthanc).")
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The user's configuration, data, cache and log folders of the child, inside the test's folder."""
    return os.environ | {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PNEUMOFL_DB_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }
