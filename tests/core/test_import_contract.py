"""core/ must never import Qt or the desktop package (DESIGN.md)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import core

FORBIDDEN = ("PySide6", "pyqtgraph", "qasync", "desktop", "shiboken6")


def test_importing_every_core_module_loads_no_gui_module():
    names = [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if ".migrations" not in m.name]
    assert "core.training.runner" in names and "core.persistence.sink" in names
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(core.__file__).parent.parent,
    )
    assert out.stdout.strip() == "", f"core pulled in GUI modules: {out.stdout.strip()}"


def test_no_core_source_file_mentions_a_gui_import():
    offenders = []
    for path in Path(core.__file__).parent.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and stripped.split()[1].split(".")[0] in FORBIDDEN:
                offenders.append(f"{path}: {stripped}")
    assert offenders == []
