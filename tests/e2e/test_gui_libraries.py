"""Missing desktop libraries are named with the command that installs them, never Qt's abort."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import PySide6

from desktop.system_libraries import XCB_LIBRARIES, missing_gui_packages
from tests.e2e.cli import pneumofl

QT = Path(PySide6.__file__).parent / "Qt"


def _unresolved_qt_xcb_libraries() -> set[str]:
    """What the dynamic linker cannot find for Qt's xcb platform plugin on this machine."""
    plugins = [QT / "plugins" / "platforms" / "libqxcb.so", *sorted((QT / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    out = "".join(subprocess.run(["ldd", str(p)], capture_output=True, text=True).stdout for p in plugins)
    return set(re.findall(r"^\s*lib(\S+?)\.so[.\d]*\s+=> not found", out, flags=re.M))


def test_the_check_names_every_library_qt_cannot_find(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    unresolved = _unresolved_qt_xcb_libraries()
    assert unresolved <= set(XCB_LIBRARIES), f"Qt needs libraries we do not check: {unresolved - set(XCB_LIBRARIES)}"
    assert set(missing_gui_packages()) == {XCB_LIBRARIES[name] for name in unresolved}


def test_gui_without_its_libraries_says_what_to_install(env):
    desktop_env = {k: v for k, v in env.items() if k != "QT_QPA_PLATFORM"} | {"QT_QPA_PLATFORM": "xcb"}
    probe = "from desktop.system_libraries import missing_gui_packages as m; print(' '.join(m()))"
    missing = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=desktop_env).stdout
    proc = pneumofl("gui", env=desktop_env, timeout=60)
    if missing.split():
        assert proc.returncode == 2
        assert f"sudo apt-get install {missing.strip()}" in proc.stderr
        assert "Could not load the Qt platform plugin" not in proc.stderr
    else:  # everything is installed: Qt itself starts (and, with no display here, says so and stops)
        assert "needs system libraries" not in proc.stderr
