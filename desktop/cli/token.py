"""The viewer token of this installation: remote viewers need it to watch runs.

pneumofl token show     print it
pneumofl token rotate   replace it (viewers holding the old one are refused from now on); the rotation is
                        recorded in the audit trail of the database (--db, default as for every command)
"""

from __future__ import annotations

import argparse

from core.broadcast.tokens import load_or_create_token, rotate_token, token_path
from desktop.cli.common import add_db_option


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``token show|rotate``."""
    p = commands.add_parser(
        "token",
        help="show or rotate the viewer token",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="token_command", required=True, metavar="{show,rotate}")
    sub.add_parser("show", help="print the token").set_defaults(func=lambda args: _print(load_or_create_token()))
    rotate = sub.add_parser("rotate", help="replace the token (recorded in the audit trail)")
    add_db_option(rotate)
    rotate.set_defaults(func=lambda args: _print(rotate_token(db_url=args.db), True))


def _print(token: str, rotated: bool = False) -> int:
    print(token)
    if rotated:
        print(f"New token saved in {token_path()}; give it to your viewers.", flush=True)
    return 0
