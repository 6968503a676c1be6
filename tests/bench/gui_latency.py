"""GUI responsiveness: lateness of a 5 ms precise timer on the main thread, idle and during a demo training.

One process: the Training page (live dashboard visible) is shown; a Qt.PreciseTimer fires every 5 ms and records
how late each tick is. Phase 1 measures an idle window; phase 2 starts the default demo training (epochs capped)
from the page itself and measures until the run ends.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python tests/bench/gui_latency.py [--idle-s 5] [--epochs 2]
Then it starts another run and presses Stop mid-epoch: the time until the run is recorded as cancelled.
Last line: JSON with p50/p99/max lateness in ms for both phases and the stop time. Targets: p99 <= 16 ms during
training; Stop under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from core.config import demo_config
from desktop.app import collect_garbage_on_gui_thread
from desktop.gui.training_page import TrainingPage

INTERVAL_MS = 5


class LatenessProbe:
    """Records, for each tick of a 5 ms precise timer, how much later than due it fired."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self.samples = []
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.samples

    def _tick(self) -> None:
        now = time.perf_counter()
        self.samples.append(max(0.0, (now - self._last) * 1000 - INTERVAL_MS))
        self._last = now


def summary(samples: list[float]) -> dict[str, float]:
    data = np.asarray(samples)
    return {
        "ticks": len(data),
        "p50_ms": round(float(np.percentile(data, 50)), 2),
        "p99_ms": round(float(np.percentile(data, 99)), 2),
        "max_ms": round(float(data.max()), 2),
    }


def measure_stop(app: QApplication, page: TrainingPage) -> float:
    """Start another run, press Stop in the middle of its second epoch, time until it is recorded as cancelled."""
    page.last_result = None
    page.set_config(demo_config(epochs=50))
    page.start()
    while not (page.running and len(page.dashboard.store["batch/train_loss"]) >= 5):
        app.processEvents()
        time.sleep(0.001)
    pressed = time.perf_counter()
    page.stop()
    while page.last_result is None or page.running:
        app.processEvents()
        time.sleep(0.001)
    return time.perf_counter() - pressed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    gc_guard = collect_garbage_on_gui_thread()  # as the app does  # noqa: F841
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        page = TrainingPage(f"sqlite:///{tmp}/latency.db", demo_config(epochs=args.epochs))
        page.resize(1400, 900)
        page.show()
        probe = LatenessProbe()
        poll = QTimer()
        poll.setInterval(50)
        started = [0.0]

        def end_idle() -> None:
            results["idle"] = probe.stop()
            print(f"idle: {summary(results['idle'])}", flush=True)
            page.start()
            poll.start()

        def watch() -> None:
            if "training" not in results and page.running and not probe.timer.isActive():
                started[0] = time.perf_counter()
                probe.start()  # the run is live: measure from its first moment to its end
            if page.last_result is not None and not page.running:
                poll.stop()
                results["training"] = probe.stop()
                app.quit()

        poll.timeout.connect(watch)
        probe.start()
        QTimer.singleShot(int(args.idle_s * 1000), end_idle)
        app.exec()
        elapsed = time.perf_counter() - started[0]
        print(f"training ({elapsed:.1f}s, {page.last_result.status}): {summary(results['training'])}", flush=True)
        stop_s = measure_stop(app, page)
        print(f"Stop pressed mid-epoch: run recorded as {page.last_result.status} after {stop_s:.2f}s", flush=True)
        page.dashboard.stop_timer()
    print(
        json.dumps(
            {
                "interval_ms": INTERVAL_MS,
                "idle": summary(results["idle"]),
                "training": summary(results["training"]),
                "training_s": round(elapsed, 1),
                "stop_to_recorded_s": round(stop_s, 2),
                "dashboard_repaints": page.dashboard.repaints,
            }
        )
    )


if __name__ == "__main__":
    main()
