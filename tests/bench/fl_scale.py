"""A federation at scale on this machine: `pneumofl federate --demo` with many sites, its wall time and memory.

Runs the command exactly as a user would (default 8 sites, 3 rounds), samples every process under it twice a
second, and reports the wall time, the peak memory of all processes together (their PSS summed at each sample: pages they share,
such as torch's libraries, counted once), and
the largest RSS of one site's warm training worker. Target (issue 21): it completes; a resnet18 site's worker
stays under 1.5 GB (run with --backbone resnet18 for that figure).

Usage: .venv/bin/python tests/bench/fl_scale.py [--sites 8] [--rounds 3] [--backbone small_cnn] [-- EXTRA ARGS]
Last line: JSON {"sites", "rounds", "backbone", "wall_s", "peak_total_pss_mb", "peak_worker_rss_mb", "status"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("extra", nargs="*", help="more `pneumofl federate` options")
    args = parser.parse_args()
    pneumofl = str(Path(sys.executable).parent / "pneumofl")
    with tempfile.TemporaryDirectory(prefix="pneumofl-fl-scale-") as tmp:
        command = [pneumofl, "federate", "--demo", "--sites", str(args.sites), "--rounds", str(args.rounds)]
        command += ["--backbone", args.backbone, "--db", f"sqlite:///{tmp}/runs.db", "--work-dir", tmp, *args.extra]
        print("running:", " ".join(command), file=sys.stderr, flush=True)
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(child.pid)
        peak_total = peak_worker = 0.0
        while child.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0.0
            for proc in tree:
                try:
                    # PSS for the total (shared library pages counted once, split between their users); RSS per
                    # worker, the figure the operating system's limits use.
                    total += proc.memory_full_info().pss / 2**20
                    rss = proc.memory_info().rss / 2**20
                    if "core.federated.site_worker" in " ".join(proc.cmdline()):
                        peak_worker = max(peak_worker, rss)
                except psutil.Error:
                    continue
            peak_total = max(peak_total, total)
            time.sleep(0.5)
        output = child.stdout.read() if child.stdout else ""
        wall = time.monotonic() - started
    print(output[-3000:], file=sys.stderr)
    summary = {
        "sites": args.sites,
        "rounds": args.rounds,
        "backbone": args.backbone,
        "status": "completed" if child.returncode == 0 else f"exit {child.returncode}",
        "wall_s": round(wall, 1),
        "peak_total_pss_mb": round(peak_total),
        "peak_worker_rss_mb": round(peak_worker),
    }
    print(
        f"{args.sites} sites, {args.rounds} rounds of {args.backbone}: {summary['status']} in {wall:.0f} s; peak memory "
        f"of all processes {peak_total:.0f} MB, largest site worker {peak_worker:.0f} MB"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
