"""Live events of Flower app processes for CLI commands: a loopback collector they push to, and local listeners.

The ServerApp and ClientApps run in processes Flower starts; they push events to a collector on 127.0.0.1 with a
per-command secret (in their environment, never in a Flower message). ``--serve`` re-broadcasts to viewers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from core.broadcast.collector import IngestServer
from core.events import Event
from desktop.cli.common import CommandError
from desktop.cli.serving import hub_from_args, let_viewers_catch_up

T = TypeVar("T")


def run_with_live_events(
    args: argparse.Namespace,
    work: Callable[[dict[str, str]], T],
    listeners: Sequence[Callable[[Event], None]] = (),
) -> T:
    """Run ``work(env)`` in a thread while a loopback collector takes the events of the processes given ``env``."""
    collector = IngestServer(listeners)
    public = hub_from_args(args)
    if public is not None:
        collector.listeners.append(public.publish)

    async def main() -> T:
        await collector.start()
        try:
            if public is not None:
                try:
                    await public.start()
                except OSError as exc:
                    raise CommandError(f"Cannot serve on {public.host}:{public.port}: {exc.strerror or exc}.") from None
                print(f"Streaming live events at {public.url} (viewers need: pneumofl token show).", file=sys.stderr)
            return await asyncio.to_thread(work, collector.env)
        finally:
            await asyncio.sleep(0.5)  # the last events of the app processes
            if public is not None:
                await let_viewers_catch_up(public)
                await public.stop()
            await collector.stop()

    return asyncio.run(main())
