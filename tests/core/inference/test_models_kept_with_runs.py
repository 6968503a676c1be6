"""A run's model lives with the run in its database: another database's run 1 cannot replace it, and another
workstation (another home folder) of a shared PostgreSQL reads, exports and reports it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.export.exporter import export_model
from core.inference.models import load_run_model
from core.inference.reader import image_paths, read_images
from core.persistence import Database
from core.persistence.artifacts import list_artifacts
from core.training.recorded import train_and_record
from tests.core.conftest import tiny_run_config


def _home(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Another user data and cache folder, as on another workstation (platformdirs reads these each call)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(folder / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))


def _probabilities(db: Database, run_id: int, images: list[Path]) -> list[float]:
    model = load_run_model(db, run_id)
    return [reading.probability for reading in read_images(model, images, "default")]


def test_run_1_of_another_database_does_not_replace_this_databases_run_1(tiny_dataset, tmp_path, monkeypatch):
    _home(monkeypatch, tmp_path / "home")
    images = image_paths([str(tiny_dataset)])[:4]
    first, second = (Database.open(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    try:
        # Both runs keep their working checkpoint in the same user data folder, by run number.
        run_a = train_and_record(tiny_run_config(tiny_dataset, backbone="small_cnn", epochs=1), first)
        before = _probabilities(first, run_a.run_id, images)
        run_b = train_and_record(tiny_run_config(tiny_dataset, backbone="small_cnn", epochs=1, seed=7), second)
        assert run_a.run_id == run_b.run_id == 1
        assert _probabilities(second, 1, images) != before, "a different model"
        assert _probabilities(first, 1, images) == before
    finally:
        first.close()
        second.close()


def test_another_workstation_of_a_shared_database_reads_exports_and_reports_a_run(
    tiny_dataset, tmp_path, monkeypatch, postgres_server
):
    url = postgres_server.create_database()
    images = image_paths([str(tiny_dataset)])[:4]
    db = Database.open(url)
    try:
        _home(monkeypatch, tmp_path / "trainer")
        run = train_and_record(tiny_run_config(tiny_dataset, backbone="small_cnn", epochs=1), db)
        expected = _probabilities(db, run.run_id, images)
        _home(monkeypatch, tmp_path / "reader")  # nothing of the trainer's folders here
        assert _probabilities(db, run.run_id, images) == expected
        exported = export_model(db, run.run_id, "torchscript", tmp_path / "export")
        assert exported.model_file.is_file()
        with db.begin() as session:
            kept = {a.kind: a for a in list_artifacts(session, run.run_id)}
        assert kept.keys() == {"best", "last"} and kept["best"].size > 0
    finally:
        db.close()
        postgres_server.drop_database(url.rsplit("/", 1)[1])
