"""Watch a run streamed by another PneumoFL node, or open any run recorded there.

  pneumofl view ws://host:8765 --token TOKEN              open the live dashboard
  pneumofl view wss://host:8765 --token TOKEN --text      print events in the terminal instead
  pneumofl view ws://host:8765 --token TOKEN --list       every run recorded on that node
  pneumofl view ws://host:8765 --token TOKEN --run 12     run 12: live if it trains, else as recorded
The token is the serving node's (`pneumofl token show` there); PNEUMOFL_VIEWER_TOKEN works too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from core.broadcast.viewer import ViewerClient
from core.errors import PneumoFLError
from core.events import EpochEnd, Event, TrainingEnd
from core.sinks import ConsoleSink
from desktop.cli.common import CommandError, format_table
from desktop.cli.runs import EPOCH_COLUMNS
from desktop.cli.stats import format_federation, format_final_stats


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``view``."""
    p = commands.add_parser(
        "view",
        help="watch a run streamed by another node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="ws://host:port or wss://host:port")
    p.add_argument("--token", default=os.environ.get("PNEUMOFL_VIEWER_TOKEN"), help="the node's viewer token")
    p.add_argument("--run", default="current", help="run id to follow (default: whatever the node trains now)")
    p.add_argument("--text", action="store_true", help="print events instead of opening the dashboard")
    p.add_argument("--list", action="store_true", help="list every run recorded on the node and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the remote dashboard, or print the run until it ends."""
    if not args.token:
        raise CommandError("A viewer token is needed: --token TOKEN (run `pneumofl token show` on the serving node).")
    if not args.url.startswith(("ws://", "wss://")):
        raise CommandError(f"{args.url} is not a WebSocket address; use ws://host:port or wss://host:port.")
    run_id: int | str = int(args.run) if str(args.run).isdigit() else "current"
    if args.list:
        return _list_runs(args.url, args.token)
    if args.text:
        if isinstance(run_id, int):
            recorded = _recorded(args.url, args.token, run_id)
            if recorded is not None:  # finished, or not streamed by the node's hub: print what was recorded
                print(recorded)
                return 0
        return _print_run(args.url, args.token, run_id)
    from desktop.app import run_remote_viewer

    return run_remote_viewer(args.url, args.token, run_id)


def _list_runs(url: str, token: str) -> int:
    from core.broadcast.remote_runs import RemoteRuns

    try:
        runs = RemoteRuns(url, token).list()
    except PneumoFLError as exc:
        raise CommandError(str(exc)) from None
    columns = ["id", "experiment_name", "training_mode", "role", "status", "start_time", "best_epoch", "best_val_auroc"]
    headers = ["Run", "Name", "Mode", "Role", "Status", "Started", "Best epoch", "Val AUROC"]
    print(format_table(runs, columns, headers) if runs else "No runs recorded on that node.")
    return 0


def _recorded(url: str, token: str, run_id: int) -> str | None:
    """The run as the node recorded it, or None when its hub streams it live."""
    from core.broadcast.remote_runs import RemoteRuns, federation_from_snapshot, history_from_snapshot

    try:
        document = RemoteRuns(url, token).snapshot(run_id)
    except PneumoFLError as exc:
        raise CommandError(str(exc)) from None
    if (document.get("live") or {}).get("known") and document["run"]["status"] == "in_progress":
        return None
    history = history_from_snapshot(document)
    run = history.run
    lines = [f"Run {run.id}: {run.experiment_name} ({run.training_mode}, {run.role}) - {run.status}", ""]
    lines.append(format_final_stats(history.report))
    federation = federation_from_snapshot(document)
    if federation is not None:
        lines += ["", format_federation(federation)]
    else:
        epochs = sorted({int(x) for xs, _ in history.epoch_series.values() for x in xs})
        rows = [
            {"epoch": e} | {n: float(ys[list(xs).index(e)]) for n, (xs, ys) in history.epoch_series.items() if e in xs}
            for e in epochs
        ]
        columns = [c for c in EPOCH_COLUMNS if any(c in r for r in rows)] or ["epoch"]
        lines += ["", format_table(rows, columns) if rows else "No completed epochs."]
    return "\n".join(lines)


def _print_run(url: str, token: str, run_id: int | str) -> int:
    console = ConsoleSink(sys.stdout)
    client: ViewerClient

    def on_event(event: Event, seq: int) -> None:
        if isinstance(event, EpochEnd):
            console.handle(event)
        elif isinstance(event, TrainingEnd):
            print(f"run {event.run_id} {event.status}; best epoch {event.best_epoch}", flush=True)
            client.stop()
        else:
            console.handle(event)

    def on_state(state: str) -> None:
        print(f"[{state}]", file=sys.stderr, flush=True)

    client = ViewerClient(url, token, run=run_id, on_event=on_event, on_state=on_state)
    try:
        asyncio.run(client.run_forever())
    except KeyboardInterrupt:
        return 130
    return 0 if client.state == "disconnected" else 2
