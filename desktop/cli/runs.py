"""List, inspect and export recorded runs.

Examples
--------
  pneumofl runs list --status completed --format json
  pneumofl runs show 12
  pneumofl runs export 12 --format csv -o run12.csv
  pneumofl runs export --all --format json -o all-runs.json
  pneumofl runs report 12 -o run12.html
  pneumofl runs delete 12 13 --yes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.persistence import export_runs
from core.persistence.artifacts import list_artifacts
from core.persistence.federation import load_federation
from core.persistence.metric_reads import epoch_table, final_stats
from core.persistence.runs import count_runs, delete_run, get_run, list_runs, run_warnings
from core.reporting import RunReport
from desktop.cli.common import CommandError, add_db_option, format_duration, format_table, open_db, plain
from desktop.cli.report import add_report_command
from desktop.cli.stats import format_federation, format_final_stats

LIST_COLUMNS = (
    "id",
    "experiment_name",
    "training_mode",
    "role",
    "status",
    "start_time",
    "best_epoch",
    "best_val_auroc",
    "best_val_recall",
    "best_val_specificity",
    "duration",
)
LIST_HEADERS = (
    "ID",
    "Experiment",
    "Mode",
    "Role",
    "Status",
    "Started",
    "Best epoch",
    "Val AUROC",
    "Val sensitivity",
    "Val specificity",
    "Duration",
)
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_recall",
    "val_specificity",
    "val_f1",
    "val_auroc",
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``runs list|show|export|delete|report``."""
    runs = commands.add_parser(
        "runs",
        help="list, show and export recorded runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="{list,show,export,delete,report}")

    p = sub.add_parser("list", help="every run with status, mode, best epoch and its AUROC, sensitivity, specificity")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--mode", choices=("centralized", "federated"))
    p.add_argument("--status", choices=("in_progress", "completed", "failed", "cancelled", "interrupted"))
    p.add_argument("--name", help="only runs whose experiment name contains this text")
    p.add_argument("--sort", default="start_time", help="column to sort by (default start_time)")
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    add_db_option(p)
    p.set_defaults(func=run_list)

    p = sub.add_parser("show", help="final stats and the per-epoch table of one run")
    p.add_argument("run_id", type=int)
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_db_option(p)
    p.set_defaults(func=run_show)

    p = sub.add_parser("export", help="write runs as CSV (long format) or JSON")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", type=int, nargs="?")
    which.add_argument("--all", action="store_true", help="export every run")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("-o", "--output", required=True, metavar="PATH")
    add_db_option(p)
    p.set_defaults(func=run_export)

    p = sub.add_parser("delete", help="delete runs with their metrics and the models kept with them")
    p.add_argument("run_ids", type=int, nargs="+", metavar="RUN_ID")
    p.add_argument("--yes", action="store_true", help="do not ask (needed when not run from a terminal)")
    add_db_option(p)
    p.set_defaults(func=run_delete)

    add_report_command(sub)


def run_list(args: argparse.Namespace) -> int:
    """Print the runs."""
    db = open_db(args)
    filters = {"training_mode": args.mode, "status": args.status, "name_contains": args.name}
    try:
        with db.begin() as session:
            try:
                runs = list_runs(
                    session,
                    **filters,
                    sort_by=args.sort,
                    descending=not args.ascending,
                    limit=args.limit,
                    offset=args.offset,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            total = count_runs(session, **filters)
    finally:
        db.close()
    if args.format == "json":  # the final statistics of each run are in `runs show RUN_ID --format json`
        print(json.dumps([{k: v for k, v in plain(r).items() if k != "final_stats"} for r in runs], indent=2))
        return 0
    rows = [plain(r) | {"duration": format_duration(r.duration), "start_time": r.start_time} for r in runs]
    print(format_table(rows, LIST_COLUMNS, LIST_HEADERS))
    print(f"{len(runs)} of {total} run(s) shown.")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print one run's summary, final stats and epochs."""
    db = open_db(args)
    try:
        with db.begin() as session:
            run = get_run(session, args.run_id)
            epochs = epoch_table(session, args.run_id)
            stats = final_stats(session, args.run_id)
            warnings = run_warnings(session, args.run_id)
            kept = list_artifacts(session, args.run_id)
            federation = load_federation(session, args.run_id) if run.role == "server" else None
    finally:
        db.close()
    if args.format == "json":
        summary = {k: v for k, v in plain(run).items() if k != "final_stats"}
        document = {"run": summary, "final_stats": stats, "epochs": epochs, "warnings": plain(warnings)}
        document["artifacts"] = [plain(a) for a in kept]
        if federation is not None:
            document["federation"] = {
                "rounds": plain(federation.rounds),
                "sites": plain([vars(reply) for reply in federation.replies]),
            }
        print(json.dumps(document, indent=2))
        return 0
    print(f"Run {run.id}: {run.experiment_name} ({run.training_mode}, {run.role}) - {run.status}")
    print(f"Started {plain(run.start_time)}, duration {format_duration(run.duration)}, data {run.source_path or '-'}")
    if run.error_message:
        print(f"Error: {run.error_message}")
    if warnings:
        print(f"Warnings ({len(warnings)}):")
        for warning in warnings:
            print(f"  {plain(warning['time'])} {warning['source']}: {warning['message']}")
    for artifact in kept:
        print(f"Kept: {artifact.kind} ({artifact.name}, {artifact.size / 1e6:.2f} MB, SHA-256 {artifact.sha256[:16]})")
    print()
    print(format_final_stats(RunReport.from_dict(stats)))
    print()
    if (stats or {}).get("data_fingerprint"):
        from core.data.fingerprint import describe

        print("\n".join(describe(stats["data_fingerprint"])))
        print()
    if federation is not None:
        print(format_federation(federation))
        return 0
    columns = [c for c in EPOCH_COLUMNS if any(c in e for e in epochs)] or ["epoch"]
    print(format_table(epochs, columns) if epochs else "No completed epochs.")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Delete runs after confirmation; their predictions stay, traceable by the model's hash."""
    ids = ", ".join(map(str, args.run_ids))
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"Deleting run(s) {ids} cannot be undone: add --yes to confirm.")
        if input(f"Delete run(s) {ids} with their metrics and models? This cannot be undone. [y/N] ").lower() != "y":
            print("Nothing deleted.")
            return 0
    db = open_db(args)
    try:
        with db.begin() as session:
            kept = [a for run_id in args.run_ids for a in list_artifacts(session, run_id)]
            for run_id in args.run_ids:
                delete_run(session, run_id)  # a run that does not exist stops here, before anything is deleted
    finally:
        db.close()
    size = sum(a.size for a in kept) / 1e6
    print(f"Deleted run(s) {ids} and {len(kept)} kept model(s) ({size:.1f} MB).")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the runs to a file."""
    db = open_db(args)
    try:
        with db.begin() as session:
            if args.all:
                ids = [r.id for r in list_runs(session, sort_by="id", descending=False, limit=10**9)]
            else:
                get_run(session, args.run_id)
                ids = [args.run_id]
        if not ids:
            raise CommandError("There are no runs to export.")
        path = export_runs(db, ids, args.format, Path(args.output).expanduser())
    finally:
        db.close()
    print(f"Exported {len(ids)} run(s) to {path}.")
    return 0
