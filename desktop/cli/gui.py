"""Open the desktop application (the default when pneumofl is run without a command)."""

from __future__ import annotations

import argparse

from desktop.cli.common import CommandError, add_db_option
from desktop.system_libraries import missing_gui_message, missing_gui_packages


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``gui``."""
    p = commands.add_parser("gui", help="open the desktop application (default)", description=__doc__)
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the Qt application (after checking that the system has the libraries Qt needs)."""
    missing = missing_gui_packages()
    if missing:
        raise CommandError(missing_gui_message(missing))
    from desktop.app import run_app  # Qt is imported only when the GUI is wanted

    return run_app(getattr(args, "db", None))
