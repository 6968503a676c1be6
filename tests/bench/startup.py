"""Start-up: time until PneumoFL's main window is shown, against a bare PySide6 + pyqtgraph window, in one run.

Both are fresh processes on the offscreen platform, timed from the process's creation (psutil) to the first
painted window: the bare one is a QMainWindow holding one pyqtgraph PlotWidget; PneumoFL's is
``pneumofl gui --quit-after 0`` on an empty SQLite database and fresh user folders, which also reports when the
training engine (torch, Lightning, torchmetrics) finished loading in the background, that is, when the first
training can start. The two alternate, ``--repeats`` times each (5 by default); medians are reported.

Usage: .venv/bin/python tests/bench/startup.py [--repeats 5]
Last line: JSON with every time, the medians, and the ratio of medians (PneumoFL / bare; target <= 2.0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BARE = """
import time, psutil
from PySide6.QtWidgets import QApplication, QMainWindow
import pyqtgraph as pg
app = QApplication([])
window = QMainWindow()
window.setCentralWidget(pg.PlotWidget())
window.resize(1200, 800)
window.show()
app.processEvents()
print(f"shown {time.time() - psutil.Process().create_time():.3f}", flush=True)
"""


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare: list[float] = []
    shown: list[float] = []
    engine: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pneumofl-startup-") as tmp:
        env = os.environ | {
            "QT_QPA_PLATFORM": "offscreen",
            "XDG_CONFIG_HOME": f"{tmp}/cfg",
            "XDG_DATA_HOME": f"{tmp}/data",
            "XDG_STATE_HOME": f"{tmp}/state",
            "XDG_CACHE_HOME": f"{tmp}/cache",
        }
        db = f"sqlite:///{tmp}/runs.db"
        run([sys.executable, "-m", "desktop", "db", "upgrade", "--db", db], env)  # a database that exists, as usual
        for repeat in range(args.repeats):
            bare.append(float(re.search(r"shown ([\d.]+)", run([sys.executable, "-c", BARE], env)).group(1)))
            out = run([sys.executable, "-m", "desktop", "gui", "--quit-after", "0", "--db", db], env)
            shown.append(float(re.search(r"window shown ([\d.]+) s", out).group(1)))
            ready = re.search(r"Training can start ([\d.]+) s", out)  # a build without the background engine: at once
            engine.append(float(ready.group(1)) if ready else shown[-1])
            print(
                f"repeat {repeat + 1}: bare {bare[-1]:.2f} s, PneumoFL window {shown[-1]:.2f} s, "
                f"training can start {engine[-1]:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    ratio = statistics.median(shown) / statistics.median(bare)
    print(
        f"main window shown (median of {args.repeats}): bare PySide6 + pyqtgraph {statistics.median(bare):.2f} s, "
        f"PneumoFL {statistics.median(shown):.2f} s, ratio {ratio:.2f} (target <= 2.0); the first training can "
        f"start at {statistics.median(engine):.2f} s"
    )
    summary = {
        "repeats": args.repeats,
        "bare_s": bare,
        "pneumofl_window_s": shown,
        "pneumofl_training_ready_s": engine,
        "median_bare_s": round(statistics.median(bare), 3),
        "median_window_s": round(statistics.median(shown), 3),
        "median_training_ready_s": round(statistics.median(engine), 3),
        "ratio": round(ratio, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
