"""What runs made, kept in their database: list them, re-hash them, remove what no run refers to.

Examples
--------
  pneumofl artifacts list
  pneumofl artifacts list --run 3 --format json
  pneumofl artifacts verify
  pneumofl artifacts gc

A run's best checkpoint (and a federation's last global model) is kept in the run's database, addressed by
its SHA-256, so every workstation of a shared database reads it. `artifacts verify` exits 0 when every artifact
matches its hash and 2 naming each one that does not.
"""

from __future__ import annotations

import argparse
import json

from core.persistence.artifacts import collect_garbage, list_artifacts, verify_artifacts
from desktop.cli.common import add_db_option, format_table, open_db, plain


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``artifacts list|verify|gc``."""
    parser = commands.add_parser(
        "artifacts",
        help="list, verify and clean up the models kept with runs in the database",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="artifacts_command", required=True, metavar="{list,verify,gc}")
    p = sub.add_parser("list", help="every artifact: run, kind, size, SHA-256, when it was kept")
    p.add_argument("--run", type=int, metavar="RUN_ID", help="only this run's")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_db_option(p)
    p.set_defaults(func=run_list)
    p = sub.add_parser("verify", help="re-hash every artifact; exit 2 naming those that changed")
    add_db_option(p)
    p.set_defaults(func=run_verify)
    p = sub.add_parser("gc", help="remove the stored bytes no run refers to any more")
    add_db_option(p)
    p.set_defaults(func=run_gc)


def run_list(args: argparse.Namespace) -> int:
    """Print the artifacts."""
    db = open_db(args)
    try:
        with db.begin() as session:
            found = list_artifacts(session, args.run)
    finally:
        db.close()
    rows = [
        {
            "run": a.run_id,
            "kind": a.kind,
            "name": a.name,
            "mb": f"{a.size / 1e6:.2f}",
            "sha256": a.sha256,
            "kept": plain(a.created_at),
        }
        for a in found
    ]
    if args.format == "json":
        print(json.dumps([r | {"size": a.size} for r, a in zip(rows, found, strict=True)], indent=2))
        return 0
    if not rows:
        print("No artifacts." if args.run is None else f"Run {args.run} kept no artifacts.")
        return 0
    print(format_table(rows, list(rows[0]), ["Run", "Kind", "File", "MB", "SHA-256", "Kept"]))
    total = sum(a.size for a in found)
    print(f"{len(found)} artifact(s), {total / 1e6:.1f} MB.")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Re-hash every artifact."""
    db = open_db(args)
    try:
        with db.begin() as session:
            problems = verify_artifacts(session)
            count = len(list_artifacts(session))
    finally:
        db.close()
    for problem in problems:
        print(problem)
    if problems:
        return 2
    print(f"All {count} artifact(s) match their SHA-256.")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Remove what no run refers to."""
    db = open_db(args)
    try:
        with db.begin() as session:
            removed, size = collect_garbage(session)
    finally:
        db.close()
    print(f"Removed {removed} artifact(s) no run refers to ({size / 1e6:.1f} MB).")
    return 0
