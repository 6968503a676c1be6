"""Which system libraries Qt's desktop platform needs on Linux, checked before Qt is loaded.

Qt aborts the process with "Could not load the Qt platform plugin xcb" when one is missing, a message radiology
staff cannot act on. Checking first lets ``pneumofl`` say which packages to install instead.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

# library name (as ctypes.util.find_library takes it) -> the Debian/Ubuntu package that ships it
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "xkbcommon": "libxkbcommon0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-image": "libxcb-image0",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-randr": "libxcb-randr0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-shape": "libxcb-shape0",
    "xcb-xkb": "libxcb-xkb1",
    "EGL": "libegl1",
    "GL": "libgl1",
    "fontconfig": "libfontconfig1",
    "dbus-1": "libdbus-1-3",
}


def missing_gui_packages() -> list[str]:
    """The Debian packages of the libraries Qt's xcb platform needs that this machine lacks (Linux, X11 only).

    Empty elsewhere, and when Qt was told to use another platform (``QT_QPA_PLATFORM``, e.g. offscreen, wayland).
    """
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return []
    return [package for library, package in XCB_LIBRARIES.items() if ctypes.util.find_library(library) is None]


def missing_gui_message(packages: list[str]) -> str:
    """The sentence ``pneumofl`` prints instead of Qt's abort when system libraries are missing."""
    return (
        f"The desktop application needs system libraries this machine lacks ({', '.join(packages)}). "
        f"Install them with: sudo apt-get install {' '.join(packages)} (on Fedora/RHEL: sudo dnf install "
        "xcb-util-cursor xcb-util-wm xcb-util-image xcb-util-keysyms xcb-util-renderutil libxkbcommon-x11), "
        "then start PneumoFL again. The command line (pneumofl train, pneumofl data check) works without them."
    )
