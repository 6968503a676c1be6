"""Chart scale: a run with 1,000,000 batch points per curve opened in the run viewer.

Builds a SQLite database holding one run with 1M batch points for each of train_loss, grad_norm and lr (plus 100
epochs of epoch metrics), then in one process: time from opening the run to its first paint (epoch charts and
final statistics come first), time until every batch point is loaded in the background and drawn, and the frame
time of synchronous repaints while panning and zooming the batch chart over the full data.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python tests/bench/chart_scale.py [--points 1000000] [--frames 200]
Last line: JSON. Targets: first paint <= 1 s, p99 frame <= 33 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtWidgets import QApplication

from core.persistence import Database
from core.persistence.runs import create_run, finish_run
from desktop.app import collect_garbage_on_gui_thread
from desktop.gui.runs_page import RunViewer

BATCH_CURVES = ("train_loss", "grad_norm", "lr")


def build(path: Path, points: int) -> int:
    db = Database.open(f"sqlite:///{path}")
    with db.begin() as session:
        run_id = create_run(session, experiment_name="scale", config={})
        finish_run(session, run_id, status="completed", best_epoch=50, best_val_recall=0.9, duration=1.0)
    db.close()
    rng = np.random.default_rng(0)
    steps = np.arange(1, points + 1)
    with sqlite3.connect(path) as conn:
        for name in BATCH_CURVES:
            values = np.abs(np.cumsum(rng.normal(0, 0.01, points))) + rng.random(points) * 0.1
            kind = "train" if name.startswith("train") else "other"
            conn.executemany(
                "INSERT INTO run_metrics (run_id, metric_name, metric_value, step, dataset_type, context) "
                "VALUES (?, ?, ?, ?, ?, 'batch')",
                ((run_id, name, float(v), int(s), kind) for s, v in zip(steps, values)),
            )
        epochs = [
            (run_id, f"{split}_{m}", float(rng.random()), e, "train" if split == "train" else "validation")
            for e in range(1, 101)
            for split in ("train", "val")
            for m in ("loss", "accuracy", "recall", "specificity", "f1", "auroc")
        ]
        conn.executemany(
            "INSERT INTO run_metrics (run_id, metric_name, metric_value, step, dataset_type, context) "
            "VALUES (?, ?, ?, ?, ?, 'epoch_end')",
            epochs,
        )
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # as the app does  # noqa: F841
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scale.db"
        started = time.perf_counter()
        run_id = build(path, args.points)
        print(f"built {len(BATCH_CURVES)} x {args.points:,} batch points in {time.perf_counter() - started:.1f}s")
        db = Database.open(f"sqlite:///{path}")

        started = time.perf_counter()
        viewer = RunViewer(db, run_id)
        viewer.resize(1400, 900)
        viewer.show()
        app.processEvents()
        viewer.repaint()
        first_paint = time.perf_counter() - started
        print(f"first paint {first_paint * 1000:.0f} ms")

        while not viewer.full_loaded:
            app.processEvents()
            time.sleep(0.005)
        app.processEvents()
        full_load = time.perf_counter() - started
        xs, _ = viewer.dashboard.curve_data("batch/train_loss")
        print(f"all {len(xs):,} points loaded after {full_load:.2f}s")

        plot = viewer.dashboard.batch_plot
        frames = []
        for i in range(args.frames):
            # Alternate zooming in towards a window and panning it across the whole run.
            width = args.points / (1 + (i % 50))
            left = (i * 7919) % max(1, int(args.points - width))
            plot.setXRange(left, left + width, padding=0)
            t0 = time.perf_counter()
            viewer.dashboard.plots.repaint()
            app.processEvents()
            frames.append((time.perf_counter() - t0) * 1000)
        frames_arr = np.asarray(frames)
        viewer.dashboard.stop_timer()
        db.close()
    print(
        json.dumps(
            {
                "points_per_curve": args.points,
                "curves": len(BATCH_CURVES),
                "first_paint_s": round(first_paint, 3),
                "full_load_s": round(full_load, 2),
                "frame_p50_ms": round(float(np.percentile(frames_arr, 50)), 1),
                "frame_p99_ms": round(float(np.percentile(frames_arr, 99)), 1),
                "frame_max_ms": round(float(frames_arr.max()), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
