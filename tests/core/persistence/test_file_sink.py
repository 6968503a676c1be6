import csv
import json

from core.persistence import Database, FileSink, export_runs
from core.training.recorded import train_and_record


def test_file_sink_writes_the_same_rows_as_the_database_export(tiny_config, tmp_path):
    db = Database.open(f"sqlite:///{tmp_path / 'runs.db'}")
    files = FileSink(tmp_path / "files")
    result = train_and_record(tiny_config, db, sinks=[files], work_dir=tmp_path / "ckpt")
    assert result.status == "completed", result.error
    exported = export_runs(db, [result.run_id], "csv", tmp_path / "export.csv")
    db.close()

    def rows(path):
        with open(path, newline="") as f:
            return sorted((r["name"], r["step"], r["context"], round(float(r["value"]), 9)) for r in csv.DictReader(f))

    assert files.csv_path.name == f"run-{result.run_id}.csv"
    assert rows(files.csv_path) == rows(exported)

    document = json.loads(files.json_path.read_text())
    run = document["runs"][0]
    assert run["run"]["status"] == "completed" and run["run"]["best_epoch"] == result.best_epoch
    assert run["config"]["epochs"] == tiny_config.epochs
    assert run["final_stats"]["val"]["recall"] == result.final_stats["val"]["recall"]
    assert len(run["metrics"]) == len(rows(exported))
