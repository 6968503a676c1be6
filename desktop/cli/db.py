"""Database maintenance.

`pneumofl db upgrade` applies the Alembic migrations (every command also does this at start).
"""

from __future__ import annotations

import argparse

from desktop.cli.common import add_db_option, open_db


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``db upgrade``."""
    db = commands.add_parser("db", help="database maintenance", description=__doc__)
    sub = db.add_subparsers(dest="db_command", required=True, metavar="{upgrade}")
    p = sub.add_parser("upgrade", help="apply schema migrations")
    add_db_option(p)
    p.set_defaults(func=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    """Open the database, which migrates it to the newest schema."""
    db = open_db(args)
    print(f"Database {db.url_for_display} is at the newest schema.")
    db.close()
    return 0
