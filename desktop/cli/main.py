"""pneumofl: train chest X-ray pneumonia classifiers and browse every recorded run.

The command-line entry point only assembles the commands; each command is its own module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from core import __version__
from core.errors import PneumoFLError, RunCancelled
from desktop.cli import (
    artifacts,
    audit,
    certs,
    client,
    data,
    db,
    federate,
    gui,
    model,
    pacs,
    predict,
    runs,
    server,
    site,
    token,
    train,
    view,
)
from desktop.cli.common import CommandError, setup_logging

log = logging.getLogger("pneumofl")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="pneumofl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pneumofl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to the console")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (
        gui,
        train,
        predict,
        pacs,
        data,
        federate,
        server,
        client,
        site,
        certs,
        runs,
        artifacts,
        model,
        view,
        token,
        audit,
        db,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, non-zero with a one-line reason otherwise."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command is None:  # plain `pneumofl` opens the application
        args = parser.parse_args([*(list(argv) if argv is not None else sys.argv[1:]), "gui"])
    log_path = setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"pneumofl: {exc}", file=sys.stderr)
        return exc.exit_code
    except PneumoFLError as exc:
        print(f"pneumofl: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, RunCancelled):
        print("pneumofl: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pneumofl runs show 3 | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as exc:
        log.exception("unexpected error")
        print(f"pneumofl: unexpected error: {type(exc).__name__}: {exc} (details in {log_path})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
