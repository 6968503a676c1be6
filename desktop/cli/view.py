"""Watch a run streamed by another PneumoFL node.

  pneumofl view ws://host:8765 --token TOKEN            open the live dashboard
  pneumofl view wss://host:8765 --token TOKEN --text    print events in the terminal instead
The token is the serving node's (`pneumofl token show` there); PNEUMOFL_VIEWER_TOKEN works too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from core.broadcast.viewer import ViewerClient
from core.events import EpochEnd, Event, TrainingEnd
from core.sinks import ConsoleSink
from desktop.cli.common import CommandError


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the remote dashboard, or print the run until it ends."""
    if not args.token:
        raise CommandError("A viewer token is needed: --token TOKEN (run `pneumofl token show` on the serving node).")
    if not args.url.startswith(("ws://", "wss://")):
        raise CommandError(f"{args.url} is not a WebSocket address; use ws://host:port or wss://host:port.")
    run_id: int | str = int(args.run) if str(args.run).isdigit() else "current"
    if args.text:
        return _print_run(args.url, args.token, run_id)
    from desktop.app import run_remote_viewer

    return run_remote_viewer(args.url, args.token, run_id)


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
