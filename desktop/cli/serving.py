"""`--serve HOST:PORT` for CLI commands: run the broadcast hub in an asyncio loop while the work runs in a thread."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Callable
from typing import TypeVar

from core.broadcast import BroadcastHub, load_or_create_token
from core.broadcast.hub import server_ssl_context
from desktop.cli.common import CommandError

T = TypeVar("T")


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--serve``, ``--tls-cert`` and ``--tls-key``."""
    parser.add_argument("--serve", metavar="HOST:PORT", help="also stream live events to viewers (e.g. 127.0.0.1:8765)")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate (needs --tls-key)")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8765`` for IPv6) -> (host, port), with a message naming what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"--serve needs HOST:PORT such as 127.0.0.1:8765, not {text!r}.")
    return host, int(port)


def hub_from_args(args: argparse.Namespace) -> BroadcastHub | None:
    """The hub ``--serve`` asks for (``None`` without it)."""
    if not getattr(args, "serve", None):
        return None
    host, port = parse_address(args.serve)
    context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise CommandError("TLS needs both --tls-cert and --tls-key.")
        try:
            context = server_ssl_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(
                f"Cannot use the TLS certificate {args.tls_cert} with key {args.tls_key}: {exc}"
            ) from None
    from core.persistence import default_database_url

    db_url = getattr(args, "db", None) or default_database_url()
    return BroadcastHub(host, port, load_or_create_token, ssl_context=context, db_url=db_url)


def run_serving(hub: BroadcastHub | None, work: Callable[[], T]) -> T:
    """Run ``work()`` (in a worker thread) while ``hub`` serves from this thread's event loop."""
    if hub is None:
        return work()

    async def main() -> T:
        try:
            await hub.start()
        except OSError as exc:
            raise CommandError(f"Cannot serve on {hub.host}:{hub.port}: {exc.strerror or exc}.") from None
        where = f"{hub.url}, in a browser at {hub.page_url}" if hub.page_url else hub.url
        print(f"Streaming live events at {where} (viewers need the token: pneumofl token show).", file=sys.stderr)
        try:
            return await asyncio.to_thread(work)
        finally:
            await let_viewers_catch_up(hub)
            await hub.stop()

    return asyncio.run(main())


async def let_viewers_catch_up(hub: BroadcastHub, timeout: float = 3.0) -> None:
    """Give connected viewers a moment to receive the last events (training_end) before closing."""
    deadline = asyncio.get_running_loop().time() + timeout
    await asyncio.sleep(hub.batch_window * 2)
    while not hub.delivered() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
