"""The audit trail of this node: who did what, hash-chained so that editing, deleting or reordering shows.

Examples
--------
  pneumofl audit show --since 2026-12-01 --kind model_exported
  pneumofl audit show --format json
  pneumofl audit verify
  pneumofl audit export -o trail.jsonl --since 2026-12-01

`audit verify` exits 0 when the trail is intact, 2 naming the first broken entry, and 3 when this computer has
no key for the database (copy it from the workstation that created the trail; the message says where to).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.audit import AuditEntry, entries, export_jsonl, verify
from core.audit.kinds import KINDS
from core.errors import AuditKeyMissing
from desktop.cli.common import CommandError, add_db_option, open_db

SUMMARY_WIDTH = 80


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``audit show|verify|export``."""
    audit = commands.add_parser(
        "audit",
        help="show, verify and export the tamper-evident audit trail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="{show,verify,export}")

    p = sub.add_parser("show", help="list the entries: seq, local time, user, kind and what happened")
    _add_since(p)
    p.add_argument("--kind", action="append", metavar="KIND", help=f"only this kind (repeatable): {', '.join(KINDS)}")
    p.add_argument("--format", choices=("text", "json"), default="text")
    add_db_option(p)
    p.set_defaults(func=run_show)

    p = sub.add_parser("verify", help="check every entry's hash and link and the signed head")
    add_db_option(p)
    p.set_defaults(func=run_verify)

    p = sub.add_parser("export", help="write the entries with their hashes as JSON lines")
    p.add_argument("-o", "--output", required=True, metavar="PATH")
    _add_since(p)
    add_db_option(p)
    p.set_defaults(func=run_export)


def _add_since(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="DATE", help="only entries from this local date or time on (2026-12-01)")


def parse_since(value: str | None) -> datetime | None:
    """A ``--since`` date (``2026-12-01``) or date and time (``2026-12-01T08:30``) in local time, as aware UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--since {value!r} is not a date: write it as 2026-12-01, or 2026-12-01T08:30 for a time."
        ) from None
    return (moment.astimezone() if moment.tzinfo is None else moment).astimezone(UTC)


def run_show(args: argparse.Namespace) -> int:
    """Print the entries."""
    since = parse_since(args.since)
    db = open_db(args)
    try:
        with db.begin() as session:
            found = entries(session, since, args.kind)
    finally:
        db.close()
    if args.format == "json":
        print(json.dumps([entry.as_json() for entry in found], indent=2, ensure_ascii=False))
        return 0
    for entry in found:
        print(format_entry(entry))
    print(f"{len(found)} audit {'entry' if len(found) == 1 else 'entries'} shown.")
    return 0


def format_entry(entry: AuditEntry) -> str:
    """One line: seq, local time, user, kind and a short summary of the details."""
    when = entry.recorded_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{entry.seq:>6}  {when}  {entry.os_user}  {entry.kind}  {summarize(entry.details)}"


def summarize(details: dict[str, Any]) -> str:
    """``key=value, ...`` cut to :data:`SUMMARY_WIDTH` characters."""
    text = ", ".join(f"{key}={_short(value)}" for key, value in details.items())
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 3] + "..."


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, ensure_ascii=False)


def run_verify(args: argparse.Namespace) -> int:
    """Verify the trail: exit 0 when intact, 2 naming the first broken entry."""
    db = open_db(args)
    try:
        result = verify(db)
    except AuditKeyMissing as exc:
        raise CommandError(str(exc), exit_code=3) from None
    finally:
        db.close()
    if not result.ok:
        raise CommandError(result.reason)
    print(result.reason)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the entries to a JSON-lines file."""
    since = parse_since(args.since)
    path = Path(args.output).expanduser()
    db = open_db(args)
    try:
        count = export_jsonl(db, path, since)
    finally:
        db.close()
    print(f"Exported {count} audit {'entry' if count == 1 else 'entries'} to {path}.")
    return 0
