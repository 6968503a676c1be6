"""A recorded run: prepare the data, create the run row, train with the database sink attached, keep its model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from core.config import RunConfig
from core.data import PreparedDataset
from core.data.prepare import prepare_dataset
from core.model.checkpoint import run_folder
from core.persistence import Database, DatabaseSink
from core.persistence.artifacts import keep_file
from core.persistence.runs import create_run
from core.sinks import EventSink, SinkSet
from core.training.runner import RunResult, run_training


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
        Checkpoint folder; defaults to :func:`run_folder`.

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
    fanout = SinkSet([DatabaseSink(db, run_id), *sinks])
    fanout.run_id = run_id
    try:
        result = run_training(
            config,
            data,
            fanout,
            run_id=run_id,
            cancel=cancel,
            work_dir=work_dir or run_folder(run_id),
            progress_bar=progress_bar,
        )
    finally:
        fanout.close()
    keep_file(db, run_id, "best", result.checkpoint_path)
    return result
