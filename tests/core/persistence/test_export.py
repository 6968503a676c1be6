"""CSV and JSON exports round-trip the stored values, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from core.errors import PneumoFLError, RunNotFoundError
from core.events import BatchMetrics, ClientUpdate, EpochEnd, TrainingEnd
from core.persistence import Database, DatabaseSink, export_runs
from core.persistence import export as export_module
from core.persistence.metric_reads import get_metrics, run_report
from core.persistence.rows import final_rows
from core.persistence.runs import create_run, get_run


def _recorded_run(db: Database, name: str, epochs: int = 3) -> int:
    with db.begin() as session:
        run_id = create_run(session, experiment_name=name, config={"lr": 0.01, "nested": {"a": [1, 2]}})
    sink = DatabaseSink(db, run_id)
    for epoch in range(1, epochs + 1):
        for step in range(4):
            sink.handle(BatchMetrics(epoch=epoch, step=epoch * 10 + step, metrics={"train_loss": 1 / (step + 1)}))
        sink.handle(
            EpochEnd(epoch=epoch, metrics={"train_loss": 0.1 * epoch, "val_recall": math.nan if epoch == 2 else 0.5})
        )
    sink.handle(ClientUpdate(client_id="n1", round_number=1, num_examples=3, metrics={"train_loss": 0.3}))
    final = {"val": {"recall": 0.5}, "test": {"recall": 0.4}, "youden": {"threshold": 0.3, "val": {"recall": 0.6}}}
    sink.handle(TrainingEnd(status="completed", best_epoch=1, best_val_recall=0.5, duration=1.0, final_stats=final))
    sink.close()
    return run_id


def _stored(db: Database, run_id: int) -> list[tuple]:
    """The run's rows in long format: those stored, and its final statistics as final_epoch rows."""
    with db.begin() as session:
        stored = [tuple(m) for m in get_metrics(session, run_id)]
        final = final_rows(run_id, run_report(session, run_id), get_run(session, run_id).best_epoch)
    assert ("val_recall", 0.5, 1, "validation", "final_epoch", None, None) in [row[1:] for row in final]
    return stored + [row[1:] for row in final]


def _canonical(rows: list[tuple]) -> list[tuple]:
    """Sorted, values compared by repr (NaN != NaN would defeat equality)."""
    return sorted((((r[0], repr(r[1])), *r[2:]) for r in rows), key=repr)


def test_csv_round_trip(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "CHUNK_ROWS", 7)  # several chunks per run
    first, second = _recorded_run(db, "a"), _recorded_run(db, "b", epochs=2)
    out = export_runs(db, [first, second], "csv", tmp_path / "runs.csv")
    with open(out, newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["run", "name", "value", "step", "dataset_type", "context", "site", "round"]
    for run_id in (first, second):
        exported = [r for r in rows[1:] if int(r[0]) == run_id]
        stored = _stored(db, run_id)
        assert len(exported) == len(stored)
        parsed = [
            (r[1], float(r[2]), int(r[3]), r[4], r[5], r[6] or None, int(r[7]) if r[7] else None) for r in exported
        ]
        assert _canonical(parsed) == _canonical(stored)
    assert not list(tmp_path.glob(".*partial"))


def test_json_round_trip(db: Database, tmp_path: Path) -> None:
    run_id = _recorded_run(db, "json")
    out = export_runs(db, [run_id], "json", tmp_path / "run.json")
    payload = json.loads(out.read_text(encoding="utf-8"))  # strict JSON: NaN became null
    (entry,) = payload["runs"]
    assert entry["run"]["id"] == run_id and entry["run"]["status"] == "completed"
    assert entry["run"]["start_time"].endswith("+00:00")
    assert entry["config"] == {"lr": 0.01, "nested": {"a": [1, 2]}}
    assert entry["final_stats"] == {
        "val": {"recall": 0.5},
        "test": {"recall": 0.4},
        "youden": {"threshold": 0.3, "val": {"recall": 0.6}},
    }
    assert entry["sites"] == [{"site_id": "n1", "site_name": "n1"}]
    stored = _stored(db, run_id)
    exported = [
        (
            m["name"],
            math.nan if m["value"] is None else m["value"],
            m["step"],
            m["dataset_type"],
            m["context"],
            m["site"],
            m["round"],
        )
        for m in entry["metrics"]
    ]
    assert len(exported) == len(stored)
    assert _canonical(exported) == _canonical(stored)


def test_export_errors(db: Database, tmp_path: Path) -> None:
    run_id = _recorded_run(db, "err", epochs=1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "out.csv"
    with pytest.raises(PneumoFLError) as info:
        export_runs(db, [run_id], "csv", target)
    assert str(target) in str(info.value)
    with pytest.raises(RunNotFoundError):
        export_runs(db, [run_id, 999_999], "json", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ValueError, match="csv"):
        export_runs(db, [run_id], "xml", tmp_path / "x.xml")  # type: ignore[arg-type]
