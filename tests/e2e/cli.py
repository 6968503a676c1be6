"""Running the real ``pneumofl`` command in a subprocess, as the end-to-end tests do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def pneumofl(
    *args: object, env: dict[str, str], timeout: float = 240, check: int | None = None, warnings_too: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``pneumofl ARGS`` from the repository root; assert the exit code when ``check`` is given.

    Whatever a test feeds it, good or bad, a user's console never shows a traceback (nor, with ``warnings_too``,
    a library's warning).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "desktop", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    for text in (proc.stdout, proc.stderr):
        assert "Traceback" not in text, text[-3000:]
        assert not warnings_too or "Warning:" not in text, text[-3000:]
    return proc
