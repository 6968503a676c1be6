"""A recorded run: prepare the data, create the run row, train with the database sink attached, keep its models.

A recorded run keeps its best checkpoint and its training state in its working folder after every epoch, and
copies them into its database at most every :data:`COPY_EVERY_S` seconds and when it ends, so
:func:`resume_and_record` can continue it in place after a crash, a cancel or a failure (``train --resume``), on
this workstation from the last epoch, on another one of a shared database from the last copy.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig
from core.data import PreparedDataset
from core.data.prepare import prepare_dataset
from core.errors import PneumoFLError
from core.model.checkpoint import run_folder
from core.persistence import Database, DatabaseSink
from core.persistence.artifacts import artifact_file
from core.persistence.identity import database_identity
from core.persistence.keeper import ArtifactKeeper
from core.persistence.resumes import ResumeRefused, add_earlier_duration, reopen_run, resumable_run
from core.persistence.runs import RunRecord, create_run
from core.sinks import EventSink, SinkSet
from core.training.resume import ResumePoint, config_changes, data_manifest, manifest_changes, read_resume_point
from core.training.runner import RunResult, run_training

COPY_EVERY_S = 60.0
"""How often, at most, a running run's checkpoints are copied into its database. A resnet18's training state is
135 MB: copied every epoch, a run of short epochs would spend more time writing than training."""


class _Copies:
    """Copies a run's files into its database through ``keeper``, at most every ``every`` seconds per kind."""

    def __init__(self, keeper: ArtifactKeeper, every: float) -> None:
        self.keeper, self.every = keeper, every
        self._copied: dict[str, float] = {}
        self._waiting: dict[str, Path] = {}
        self._started = time.monotonic()

    def __call__(self, kind: str, path: Path) -> None:
        now = time.monotonic()
        if now - self._copied.get(kind, self._started) >= self.every:
            self.keeper.keep(kind, path)
            self._copied[kind] = now
            self._waiting.pop(kind, None)
        else:
            self._waiting[kind] = path

    def flush(self) -> None:
        """Copy the newest file of every kind not copied yet (the run ended: its final weights, its last state)."""
        for kind, path in self._waiting.items():
            self.keeper.keep(kind, path)
        self._waiting.clear()


def train_and_record(
    config: RunConfig,
    db: Database,
    *,
    sinks: Iterable[EventSink] = (),
    data: PreparedDataset | None = None,
    cancel: threading.Event | None = None,
    progress_bar: bool = False,
    on_run_created: Callable[[int], None] | None = None,
    work_dir: str | Path | None = None,
) -> RunResult:
    """Validate, record and train one centralized run.

    Parameters
    ----------
    config
        The run configuration; validated here.
    db
        The open database; the run and every metric go there.
    sinks
        Further listeners (console, GUI bridge, hub, files).
    data
        Already prepared data (skips a second validation pass when the caller showed the summary).
    cancel
        Set to stop the run cooperatively.
    progress_bar
        Show the console progress bar.
    on_run_created
        Called with the new run id before training starts.
    work_dir
        Working folder for checkpoints; defaults to :func:`run_folder` of this database.

    Raises
    ------
    core.errors.ConfigError, core.errors.DataError, core.errors.DatabaseError
        Before the run is created, for input the user must fix.
    """
    config.validate()
    data = data or prepare_dataset(config)
    with db.begin() as session:
        run_id = create_run(
            session,
            experiment_name=config.experiment_name,
            config=config.to_dict(),
            source_path=data.summary.source,
        )
    if on_run_created is not None:
        on_run_created(run_id)
    with db.begin() as session:
        folder = Path(work_dir or run_folder(run_id, database_identity(session)))
    return _train(config, data, db, run_id, sinks, cancel, progress_bar, folder)


@dataclass(frozen=True)
class ResumePlan:
    """A run that can be resumed, with what resuming it needs (see :func:`plan_resume`)."""

    run: RunRecord
    config: RunConfig
    point: ResumePoint
    folder: Path
    best: Path | None  # the best checkpoint so far, fetched from the database


def plan_resume(db: Database, run_id: int, work_dir: str | Path | None = None) -> ResumePlan:
    """Check that run ``run_id`` can continue, and fetch its training state from the database.

    Raises
    ------
    core.errors.RunNotFoundError, core.persistence.resumes.ResumeRefused
        With a sentence saying why the run cannot be resumed.
    """
    with db.begin() as session:
        run = resumable_run(session, run_id)
        stored = artifact_file(session, run_id, "last")
        best = artifact_file(session, run_id, "best")
        folder = Path(work_dir or run_folder(run_id, database_identity(session)))
    # The working copy is the newest on the workstation that trained it; the database's, anywhere.
    points = []
    for path in (folder / "last.ckpt", stored):
        if path is not None and path.is_file():
            with contextlib.suppress(PneumoFLError):  # a completed run's weights, not a state
                points.append(read_resume_point(path))
    if not points:
        raise ResumeRefused(
            f"Run {run_id} kept no training state to resume from: it stopped before its first epoch ended, or was "
            "recorded by an older PneumoFL. Train a new run with its settings instead."
        )
    point = max(points, key=lambda p: p.epochs_completed)
    if point.path == folder / "last.ckpt" and (folder / "best.ckpt").is_file():
        best = folder / "best.ckpt"  # the best checkpoint of the same epochs as the working state
    config = RunConfig.from_dict(run.config).validate()
    changed = config_changes(point.config, config.to_dict())
    if changed:
        raise ResumeRefused(f"Run {run_id} cannot resume: its settings changed since it began ({'; '.join(changed)}).")
    return ResumePlan(run=run, config=config, point=point, folder=folder, best=best)


def resume_and_record(
    plan: ResumePlan,
    db: Database,
    *,
    sinks: Iterable[EventSink] = (),
    data: PreparedDataset | None = None,
    cancel: threading.Event | None = None,
    progress_bar: bool = False,
    on_reopened: Callable[[int], None] | None = None,
) -> RunResult:
    """Continue ``plan``'s run after its last completed epoch, in the same run.

    Optimiser, scheduler, early stopping, best checkpoint and every random generator continue where they were,
    so the epochs that follow are those an uninterrupted run would have trained. ``on_reopened`` is called with
    the run id once the run is back in progress, before its first event (the GUI redraws what it kept).

    Raises
    ------
    core.persistence.resumes.ResumeRefused
        If the run's images changed since it began, naming what changed.
    core.errors.DataError
        If the data can no longer be read.
    """
    run, point = plan.run, plan.point
    data = data or prepare_dataset(plan.config)
    changed = manifest_changes(point.manifest, data_manifest(plan.config, data))
    if changed:
        raise ResumeRefused(
            f"Run {run.id} cannot resume: its images changed since it began ({'; '.join(changed)}). Put the data "
            "back as it was, or train a new run on the data as it is now."
        )
    if plan.best is not None and plan.best != plan.folder / "best.ckpt":
        plan.folder.mkdir(parents=True, exist_ok=True)
        partial = plan.folder / "best.ckpt.partial"
        shutil.copyfile(plan.best, partial)
        partial.replace(plan.folder / "best.ckpt")
    with db.begin() as session:
        reopen_run(
            session,
            run,
            epochs_completed=point.epochs_completed,
            global_step=point.global_step,
            best_epoch=point.best_epoch,
        )
    if on_reopened is not None:
        on_reopened(run.id)
    result = _train(plan.config, data, db, run.id, sinks, cancel, progress_bar, plan.folder, point.path)
    with db.begin() as session:
        add_earlier_duration(session, run)
    return result


def _train(
    config: RunConfig,
    data: PreparedDataset,
    db: Database,
    run_id: int,
    sinks: Iterable[EventSink],
    cancel: threading.Event | None,
    progress_bar: bool,
    folder: Path,
    resume_from: Path | None = None,
) -> RunResult:
    fanout = SinkSet([DatabaseSink(db, run_id), *sinks])
    fanout.run_id = run_id
    keeper = ArtifactKeeper(db, run_id)
    copies = _Copies(keeper, COPY_EVERY_S)
    try:
        return run_training(
            config,
            data,
            fanout,
            run_id=run_id,
            cancel=cancel,
            work_dir=folder,
            progress_bar=progress_bar,
            keep=copies,
            resume_from=resume_from,
        )
    finally:
        copies.flush()
        keeper.close()
        fanout.close()
