"""The browser dashboard in headless Chromium: first render of a run with a million batch points, and the latency
from an event at the hub to its point drawn on the page at 200 events/s.

First render: a run recorded in SQLite with ``--points`` batch-loss rows (plus gradient norms and the learning
rate every 10 steps, and ``--epochs`` epochs) is opened in a fresh page: from the navigation's start to the first
frame with its charts drawn (the page fetches the run, which the hub reads and thins in the database, then draws).
Median of ``--repeats`` loads.

Latency: a second run is streamed through the hub only (``publish_threadsafe``, as training does), one
``batch_metrics`` event every 5 ms for ``--seconds``; the page follows it live and notes, for every point, the
time it was drawn minus the event's timestamp (the same clock: one machine).

Usage: .venv/bin/python tests/bench/web_viewer.py [--points 1000000] [--rate 200] [--seconds 10] [--repeats 3]
Last line: JSON {"points", "first_render_ms" (median), "first_render_all_ms", "events", "latency_p50_ms",
"latency_p99_ms", "latency_max_ms"}. Targets: first render <= 1000 ms; p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from sqlalchemy import insert

from core.events import BatchMetrics, TrainingStart
from core.persistence import Database
from core.persistence.models import metrics_table
from core.persistence.runs import create_run, finish_run
from tests.web.conftest import CHROMIUM_ARGS, TOKEN, ServedHub, chromium_path, sign_in


def record_big_run(db: Database, points: int, epochs: int) -> int:
    with db.begin() as session:
        run_id = create_run(session, experiment_name="a million points", config={})
    rng = np.random.default_rng(0)
    loss = np.abs(1.0 / np.sqrt(1 + np.arange(points) / 500.0) + rng.normal(0, 0.05, points))
    chunk = 50_000
    for start in range(0, points, chunk):
        steps = range(start, min(points, start + chunk))
        rows = [
            {
                "run_id": run_id,
                "metric_name": "train_loss",
                "metric_value": float(loss[s]),
                "step": s,
                "dataset_type": "train",
                "context": "batch",
                "site_id": None,
                "round_number": None,
            }
            for s in steps
        ]
        rows += [
            {
                "run_id": run_id,
                "metric_name": name,
                "metric_value": value,
                "step": s,
                "dataset_type": "other",
                "context": "batch",
                "site_id": None,
                "round_number": None,
            }
            for s in steps
            if s % 10 == 0
            for name, value in (("grad_norm", float(loss[s]) * 3), ("lr", 1e-3 * (1 - s / points)))
        ]
        with db.begin() as session:
            session.execute(insert(metrics_table), rows)
    epoch_rows = [
        {
            "run_id": run_id,
            "metric_name": f"{split}_{metric}",
            "metric_value": 0.5 + 0.4 * e / epochs,
            "step": e,
            "dataset_type": "train" if split == "train" else "validation",
            "context": "epoch_end",
            "site_id": None,
            "round_number": None,
        }
        for e in range(1, epochs + 1)
        for split in ("train", "val")
        for metric in ("loss", "accuracy", "recall", "specificity", "f1", "auroc")
    ]
    with db.begin() as session:
        session.execute(insert(metrics_table), epoch_rows)
        finish_run(session, run_id, status="completed", best_epoch=epochs)
    return run_id


def first_render(browser, served: ServedHub, run_id: int) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    signer = context.new_page()
    sign_in(signer, served)
    signer.wait_for_selector("table.runs")
    page = context.new_page()  # a fresh document: scripts, session check, the run, the drawing
    page.goto(f"{served.page}#/run/{run_id}")
    deadline = time.monotonic() + 60
    while not page.evaluate("window.pneumofl && window.pneumofl.firstDraw"):
        assert time.monotonic() < deadline, "the run never drew"
        page.wait_for_timeout(10)
    drawn = page.evaluate("window.pneumofl.firstDraw")  # ms since this document's navigation started
    assert page.evaluate("window.pneumofl.view.lossChart.stream.x.length") > 0
    context.close()
    return float(drawn)


def live_latency(browser, served: ServedHub, db: Database, rate: float, seconds: float) -> list[float]:
    with db.begin() as session:
        run_id = create_run(session, experiment_name="streamed", config={})
    hub = served.hub
    hub.publish_threadsafe(TrainingStart(run_id=run_id, experiment_name="streamed", total_epochs=1))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    sign_in(page, served)
    page.wait_for_selector("#connection:has-text('live')")
    page.goto(f"{served.page}#/run/{run_id}")
    page.wait_for_selector("#batch-charts")
    time.sleep(0.5)
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        target = start + i * interval
        while time.perf_counter() < target:
            time.sleep(min(0.001, max(0.0, target - time.perf_counter())))
        hub.publish_threadsafe(BatchMetrics(run_id=run_id, epoch=1, step=i + 1, metrics={"train_loss": 1.0 / (i + 1)}))
    time.sleep(1.0)
    latencies = page.evaluate("window.pneumofl.latencies")
    context.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = chromium_path()
    if path is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="pneumofl-web-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'runs.db'}"
        db = Database.open(url)
        started = time.monotonic()
        run_id = record_big_run(db, args.points, args.epochs)
        print(f"recorded {args.points} batch points in {time.monotonic() - started:.0f} s", file=sys.stderr)
        served = ServedHub(url, TOKEN)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
                renders = [first_render(browser, served, run_id) for _ in range(args.repeats)]
                print(f"first render: {[round(r) for r in renders]} ms", file=sys.stderr)
                latencies = live_latency(browser, served, db, args.rate, args.seconds)
                browser.close()
        finally:
            served.stop()
            db.close()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    result = {
        "points": args.points,
        "first_render_ms": round(statistics.median(renders), 1),
        "first_render_all_ms": [round(r, 1) for r in renders],
        "events": len(latencies),
        "latency_p50_ms": round(p50, 1),
        "latency_p99_ms": round(p99, 1),
        "latency_max_ms": round(ordered[-1], 1),
    }
    print(
        f"first render of {args.points} batch points: {result['first_render_ms']} ms (target <= 1000); "
        f"hub-to-drawn latency at {args.rate:.0f} events/s: p50 {result['latency_p50_ms']} ms, "
        f"p99 {result['latency_p99_ms']} ms (target <= 100) over {len(latencies)} events"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
