"""The gate's own scheduling: with two pytest-xdist workers, every test that runs a Flower federation runs on the
same worker, one after another (two federations at once on 2 cores miss their round timeouts).

pytest 9.2 and pytest-xdist 3.8 together once grouped nothing, silently; this runs a small suite the way
packaging/dev.sh runs ours, with our own grouping hook, and looks at which worker ran what.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RECORDING_TEST = """
import os, pathlib
def test_{name}():
    pathlib.Path(r"{out}", "{name}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_the_federation_tests_share_one_worker_in_the_gate(tmp_path):
    suite, out = tmp_path / "suite", tmp_path / "ran"
    out.mkdir()
    (suite / "federation").mkdir(parents=True)
    (suite / "desktop").mkdir()
    (suite / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    federation = [f"fed_{i}" for i in range(6)]
    others = [f"other_{i}" for i in range(6)]
    for name in federation:
        (suite / "federation" / f"test_{name}.py").write_text(RECORDING_TEST.format(name=name, out=out))
    (suite / "desktop" / "test_federation_page.py").write_text(RECORDING_TEST.format(name="page", out=out))
    for name in others:
        (suite / "desktop" / f"test_{name}.py").write_text(RECORDING_TEST.format(name=name, out=out))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "--no-loadscope-reorder",
            "-p",
            "no:cacheprovider",
            "-q",
            "-c",
            "/dev/null",
            "--rootdir",
            str(suite),
            str(suite),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    worker = {path.name: path.read_text() for path in out.iterdir()}
    assert len(worker) == len(federation) + len(others) + 1, worker
    assert len({worker[name] for name in [*federation, "page"]}) == 1, (
        f"federation tests ran on several workers: {worker}"
    )
    assert len(set(worker.values())) == 2, f"the other tests did not use the second worker: {worker}"
