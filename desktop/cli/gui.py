"""Open the desktop application (the default when pneumofl is run without a command)."""

from __future__ import annotations

import argparse

from desktop.cli.common import CommandError, add_db_option
from desktop.system_libraries import missing_gui_message, missing_gui_packages


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``gui``."""
    p = commands.add_parser("gui", help="open the desktop application (default)", description=__doc__)
    p.add_argument(
        "--quit-after",
        type=float,
        metavar="SECONDS",
        help=(
            "open the window, say how long that and loading the training engine took, and close it SECONDS after it "
            "was shown, once the engine is loaded (to check an installation)"
        ),
    )
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the Qt application (after checking that the system has the libraries Qt needs)."""
    missing = missing_gui_packages()
    if missing:
        raise CommandError(missing_gui_message(missing))
    from desktop.app import run_app  # Qt is imported only when the GUI is wanted

    quit_after = getattr(args, "quit_after", None)
    if quit_after is None:
        return run_app(getattr(args, "db", None))

    def report_and_close(window) -> None:
        import time

        import psutil
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication

        QApplication.processEvents()  # painted once
        shown = time.time() - psutil.Process().create_time()
        print(f"PneumoFL main window shown {shown:.2f} s after the process started.", flush=True)
        waited = {"time": False, "engine": window.engine.loaded.is_set()}

        def close_when_both(what: str) -> None:
            waited[what] = True
            if all(waited.values()):
                window.close()

        def engine_ready(seconds: float) -> None:
            print(f"Training can start {seconds:.2f} s after the process started (engine loaded).", flush=True)
            close_when_both("engine")

        window.engine.ready.connect(engine_ready)
        QTimer.singleShot(int(quit_after * 1000), lambda: close_when_both("time"))

    return run_app(getattr(args, "db", None), on_window=report_and_close)
