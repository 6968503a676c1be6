"""Open the desktop application (the default when pneumofl is run without a command)."""

from __future__ import annotations

import argparse

from desktop.cli.common import add_db_option


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``gui``."""
    p = commands.add_parser("gui", help="open the desktop application (default)", description=__doc__)
    add_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the Qt application."""
    from desktop.app import run_app  # Qt is imported only when the GUI is wanted

    return run_app(getattr(args, "db", None))
