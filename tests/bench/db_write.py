"""Benchmark: 100,000 metric rows through DatabaseSink vs raw sqlite3 executemany into the same schema.

Run: ``.venv/bin/python -m tests.bench.db_write [--rows N]``. Both sides write a fresh SQLite file created
by our migrations (WAL, synchronous=NORMAL). The last line printed is a JSON object:
``{"rows", "ours_rows_per_s", "raw_rows_per_s", "ratio"}`` (target: ratio >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from core.events import BatchMetrics
from core.persistence import Database, DatabaseSink
from core.persistence.runs import create_run

METRICS_PER_EVENT = 10


def bench_ours(path: Path, rows: int) -> float:
    """Rows per second through DatabaseSink (handle every event, then close() until durable)."""
    db = Database.open(f"sqlite:///{path}")
    with db.begin() as session:
        run_id = create_run(session, experiment_name="bench", config={})
    names = [f"train_metric_{i}" for i in range(METRICS_PER_EVENT)]
    events = [
        BatchMetrics(epoch=1, step=step, metrics={name: step * 0.001 + i for i, name in enumerate(names)})
        for step in range(rows // METRICS_PER_EVENT)
    ]
    start = time.perf_counter()
    sink = DatabaseSink(db, run_id)
    for event in events:
        sink.handle(event)
    handled = time.perf_counter() - start
    sink.close()
    elapsed = time.perf_counter() - start
    print(f"ours: handle() {handled:.3f} s, total with close() {elapsed:.3f} s", flush=True)
    with db.engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM run_metrics").scalar()
    assert count == rows, f"expected {rows} rows, found {count}"
    db.close()
    return rows / elapsed


def bench_raw(path: Path, rows: int) -> float:
    """Rows per second with plain sqlite3 executemany (same schema, same pragmas, one transaction)."""
    Database.open(f"sqlite:///{path}").close()  # the schema, from our migrations
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(
        "INSERT INTO runs (experiment_name, training_mode, role, status, start_time, source_path, config, host, pid) "
        "VALUES ('raw', 'centralized', 'standalone', 'in_progress', '2025-01-01 00:00:00', '', '{}', 'h', 1)"
    )
    connection.commit()
    run_id = connection.execute("SELECT max(id) FROM runs").fetchone()[0]
    names = [f"train_metric_{i}" for i in range(METRICS_PER_EVENT)]
    start = time.perf_counter()
    data = [
        (run_id, name, step * 0.001 + i, step, "train", "batch", None, None)
        for step in range(rows // METRICS_PER_EVENT)
        for i, name in enumerate(names)
    ]
    connection.executemany(
        "INSERT INTO run_metrics (run_id, metric_name, metric_value, step, dataset_type, context, site_id, round_number) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        data,
    )
    connection.commit()
    elapsed = time.perf_counter() - start
    connection.close()
    print(f"raw sqlite3: {elapsed:.3f} s", flush=True)
    return rows / elapsed


def main() -> None:
    """Run both benchmarks and print the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pneumofl-bench-") as folder:
        print(f"writing {args.rows} rows with DatabaseSink...", flush=True)
        ours = bench_ours(Path(folder) / "ours.db", args.rows)
        print(f"writing {args.rows} rows with raw sqlite3 executemany...", flush=True)
        raw = bench_raw(Path(folder) / "raw.db", args.rows)
    summary = {
        "rows": args.rows,
        "ours_rows_per_s": round(ours),
        "raw_rows_per_s": round(raw),
        "ratio": round(ours / raw, 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
