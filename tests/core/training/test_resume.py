"""Resuming a recorded run in place: the epochs after the resume are those an uninterrupted run trains."""

import os
import shutil
import threading
import time

import pytest

from core.errors import RunNotFoundError
from core.events import BatchMetrics, EpochEnd, LrUpdate
from core.persistence.artifacts import list_artifacts
from core.persistence.metric_reads import epoch_table, get_metrics
from core.persistence.resumes import ResumeRefused
from core.persistence.runs import create_run, finish_run, get_run, run_warnings
from core.sinks import ListSink
from core.training.recorded import plan_resume, resume_and_record, train_and_record
from tests.core.conftest import tiny_run_config
from tests.imaging import write_folder_dataset


class CancelAfter(ListSink):
    """Stops the run (as the Stop button does) once epoch ``epoch`` has ended."""

    def __init__(self, epoch: int, cancel: threading.Event) -> None:
        super().__init__()
        self.epoch, self.cancel = epoch, cancel

    def handle(self, event):
        super().handle(event)
        if isinstance(event, EpochEnd) and event.epoch == self.epoch:
            self.cancel.set()


def _cancelled_run(config, db, work_dir, after_epoch=2):
    cancel = threading.Event()
    result = train_and_record(config, db, sinks=[CancelAfter(after_epoch, cancel)], cancel=cancel, work_dir=work_dir)
    assert result.status == "cancelled" and result.epochs_completed == after_epoch
    return result.run_id


def _batch_series(db, run_id):
    with db.begin() as session:
        rows = get_metrics(session, run_id, context="batch")
    return sorted((r.metric_name, r.step, round(r.metric_value, 6)) for r in rows)


def test_a_cancelled_run_resumes_with_the_epochs_an_uninterrupted_run_trains(db, tiny_dataset, tmp_path):
    config = tiny_run_config(tiny_dataset, epochs=4, backbone="small_cnn")
    whole = train_and_record(config, db, work_dir=tmp_path / "whole")
    assert whole.status == "completed", whole.error

    run_id = _cancelled_run(config, db, tmp_path / "resumed")
    with db.begin() as session:
        stopped_epochs = epoch_table(session, run_id)
        assert {a.kind for a in list_artifacts(session, run_id)} == {"best", "last"}
    plan = plan_resume(db, run_id, work_dir=tmp_path / "resumed")
    assert plan.point.epochs_completed == 2
    live = ListSink()
    result = resume_and_record(plan, db, sinks=[live])
    assert result.status == "completed", result.error

    # Live events continue at epoch 3, with no epoch or learning rate published twice.
    assert [e.epoch for e in live.events if isinstance(e, EpochEnd)] == [3, 4]
    assert [e.epoch for e in live.events if isinstance(e, LrUpdate)] == [3, 4]
    assert all(e.epoch >= 3 for e in live.events if isinstance(e, BatchMetrics))
    with db.begin() as session:
        expected, resumed = epoch_table(session, whole.run_id), epoch_table(session, run_id)
        run, reference = get_run(session, run_id), get_run(session, whole.run_id)
        warnings = run_warnings(session, run_id)
    # Optimiser, scheduler and every random generator continued: the same numbers as without the interruption.
    assert resumed[:2] == stopped_epochs
    assert len(resumed) == 4
    for mine, theirs in zip(resumed, expected):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert mine[name] == pytest.approx(theirs[name], abs=1e-6), (mine["epoch"], name)
    assert _batch_series(db, run_id) == _batch_series(db, whole.run_id)
    assert run.status == "completed" and run.best_epoch == reference.best_epoch
    assert run.final_stats["val"]["auroc"] == pytest.approx(reference.final_stats["val"]["auroc"])
    assert run.final_stats["model"]["weights_sha256"] == reference.final_stats["model"]["weights_sha256"]
    assert [r["from_epoch"] for r in run.resumes] == [2] and run.resumes[0]["previous_status"] == "cancelled"
    assert any(w["source"] == "resume" and "after epoch 2" in w["message"] for w in warnings)


def test_changed_images_refuse_the_resume_and_the_run_keeps_what_it_recorded(db, tmp_path):
    data = write_folder_dataset(tmp_path / "xrays", per_class=12, size=32)
    config = tiny_run_config(data, epochs=3, backbone="small_cnn")
    run_id = _cancelled_run(config, db, tmp_path / "work", after_epoch=1)
    with db.begin() as session:
        recorded = epoch_table(session, run_id)

    moved = next((data / "NORMAL").iterdir())
    shutil.move(moved, tmp_path / moved.name)
    with pytest.raises(ResumeRefused, match=rf"removed \(first: NORMAL/{moved.name}\)"):
        resume_and_record(plan_resume(db, run_id, tmp_path / "work"), db)

    shutil.move(tmp_path / moved.name, moved)
    touched = next((data / "PNEUMONIA").iterdir())
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(ResumeRefused, match=rf"changed in size or modification time \(first: PNEUMONIA/{touched.name}"):
        resume_and_record(plan_resume(db, run_id, tmp_path / "work"), db)

    with db.begin() as session:
        run = get_run(session, run_id)
        assert run.status == "cancelled" and not run.resumes
        assert epoch_table(session, run_id) == recorded


def test_runs_that_cannot_be_resumed_say_why(db):
    with db.begin() as session:
        done = create_run(session, experiment_name="done", config={})
        finish_run(session, done, status="completed")
        running = create_run(session, experiment_name="running", config={})
        early = create_run(session, experiment_name="early", config={})
        finish_run(session, early, status="failed", error_message="out of memory")
        server = create_run(session, experiment_name="fl", training_mode="federated", role="server", config={})
    cases = {
        done: "completed; there is nothing to resume",
        running: f"still in progress (process {os.getpid()}",
        early: "kept no training state",
        server: "part of a federation",
    }
    for run_id, message in cases.items():
        with pytest.raises(ResumeRefused, match=message.replace("(", r"\(")):
            plan_resume(db, run_id)
    with pytest.raises(RunNotFoundError):
        plan_resume(db, 999)
