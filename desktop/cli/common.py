"""Helpers shared by the CLI commands: the --db option, opening the database, plain-text tables."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import platformdirs

from core.persistence import Database

_OWN_LOGGERS = {"pneumofl", "core", "desktop"}


class CommandError(Exception):
    """A one-line reason for a non-zero exit, shown to the user as-is."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--db URL`` (default: ``PNEUMOFL_DB_URL`` or SQLite in the user data dir)."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL, e.g. postgresql+psycopg://user@host/db (default: $PNEUMOFL_DB_URL or SQLite in the user data dir)",
    )


def open_db(args: argparse.Namespace) -> Database:
    """Open (and migrate) the database named by ``--db``."""
    return Database.open(args.db)


def setup_logging(verbose: bool = False) -> Path:
    """Log everything to a file in the user log dir; the console only gets warnings (or info with -v)."""
    folder = Path(platformdirs.user_log_dir("pneumofl"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pneumofl.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    # Library warnings (pydicom's, Lightning's) go to the log file, never to a user's console.
    logging.captureWarnings(True)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:  # libraries log their own failures with tracebacks; ours are already sentences
        console.addFilter(lambda record: record.name.split(".")[0] in _OWN_LOGGERS)
    console.setFormatter(SentenceFormatter("%(levelname)s: %(message)s"))
    root.addHandler(console)
    return path


class SentenceFormatter(logging.Formatter):
    """The message alone: tracebacks belong in the log file, never on a user's console."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` without its exception text or stack."""
        record.message = record.getMessage()
        return self.formatMessage(record)


def plain(value: Any) -> Any:
    """Make a value JSON- and table-friendly (datetimes as ISO text, dataclasses as dicts)."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def fmt_cell(value: Any) -> str:
    """Format one table cell: 4 decimals for floats, '-' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def format_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """Render rows as an aligned plain-text table."""
    headers = list(headers or columns)
    body = [[fmt_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.rjust(w) if _numeric(cell) else cell.ljust(w) for cell, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_duration(seconds: float | None) -> str:
    """``1h 02m 03s`` style duration."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


@contextlib.contextmanager
def check_progress(show: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing the dataset check's progress bar on the terminal.

    The bar appears only on a terminal (and when ``show``); in logs and pipes the check stays quiet.
    """
    from tqdm import tqdm

    bar: tqdm | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="Checking images", unit="img", file=sys.stderr, disable=None if show else True)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def stop_on_interrupt(
    cancel: threading.Event, message: str, signals: Sequence[signal.Signals] = (signal.SIGINT,)
) -> Iterator[None]:
    """The first Ctrl-C (or other of ``signals``) sets ``cancel`` and prints ``message``; a second one aborts."""

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        print(f"\n{message} (Ctrl-C again to abort)...", file=sys.stderr)
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
