"""The file sink: a run written as CSV (long format, as it happens) and JSON (when it ends), without a database.

The CSV has the same columns and rows as ``pneumofl runs export --format csv``; the JSON has the export's shape
(``{"runs": [{"run", "config", "final_stats", "metrics"}]}``). Rows go straight to the CSV file, so memory stays
flat however long the run; the JSON is written at close by reading the CSV back.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from core.events import EpochEnd, Event, RunError, TrainingEnd, TrainingStart
from core.jsonsafe import json_safe
from core.persistence.export import CSV_HEADER
from core.persistence.rows import event_rows, final_rows
from core.reporting import RunReport
from core.sinks import EventSink


class FileSink(EventSink):
    """Writes ``run-<id>.csv`` and ``run-<id>.json`` into ``folder``.

    Parameters
    ----------
    folder
        Created if missing.
    run_id
        Used in the file names and rows; falls back to the first event's ``run_id``, then ``0``.
    """

    name = "file export"

    def __init__(self, folder: str | Path, run_id: int | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.run_id = run_id
        self.run: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.final_stats: dict[str, Any] = {}
        self._csv: IO[str] | None = None
        self._writer: Any = None

    @property
    def csv_path(self) -> Path:
        """The CSV file of this run."""
        return self.folder / f"run-{self.run_id or 0}.csv"

    @property
    def json_path(self) -> Path:
        """The JSON file of this run (complete after :meth:`close`)."""
        return self.folder / f"run-{self.run_id or 0}.json"

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._csv = self.csv_path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._csv)
        self._writer.writerow(CSV_HEADER)

    def handle(self, event: Event) -> None:
        """Append the event's rows; keep what the JSON needs."""
        if self.run_id is None:
            self.run_id = event.run_id
        if self._csv is None:
            self._open()
        if isinstance(event, TrainingStart):
            self.config = event.config
            self.run = {
                "id": self.run_id,
                "experiment_name": event.experiment_name,
                "training_mode": event.training_mode,
                "role": event.role,
                "status": "in_progress",
                "start_time": _iso(event.timestamp),
            }
        elif isinstance(event, TrainingEnd):
            self.final_stats = event.final_stats
            self.run |= {
                "status": event.status,
                "end_time": _iso(event.timestamp),
                "best_epoch": event.best_epoch,
                "best_val_recall": event.best_val_recall,
                "duration": event.duration,
                "error_message": event.error,
            }
        elif isinstance(event, RunError) and event.fatal:
            self.run["error_message"] = event.message
        rows = event_rows(event, self.run_id)
        if isinstance(event, TrainingEnd):
            rows += final_rows(self.run_id or 0, RunReport.from_dict(event.final_stats), event.best_epoch)
        self._writer.writerows(
            (self.run_id or 0, name, value, step, kind, context, site or "", "" if rnd is None else rnd)
            for _, name, value, step, kind, context, site, rnd in rows
        )
        if isinstance(event, (EpochEnd, TrainingEnd)) and self._csv is not None:
            self._csv.flush()

    def close(self) -> None:
        """Finish the CSV and write the JSON next to it."""
        if self._csv is None:
            return
        self._csv.close()
        self._csv = None
        partial = self.json_path.with_suffix(".json.partial")
        with partial.open("w", encoding="utf-8") as out, self.csv_path.open(newline="", encoding="utf-8") as rows:
            head = {"run": self.run, "config": self.config, "final_stats": self.final_stats}
            out.write('{"runs": [' + _dump(head)[:-1] + ', "metrics": [')
            for i, row in enumerate(csv.DictReader(rows)):
                metric = {
                    "name": row["name"],
                    "value": float(row["value"]),
                    "step": int(row["step"]),
                    "dataset_type": row["dataset_type"],
                    "context": row["context"],
                    "site": row["site"] or None,
                    "round": int(row["round"]) if row["round"] else None,
                }
                out.write((",\n" if i else "\n") + _dump(metric))
            out.write("]}]}\n")
        partial.replace(self.json_path)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _dump(value: Any) -> str:
    return json.dumps(
        json_safe(value), allow_nan=False, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)
    )
