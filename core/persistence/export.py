"""Export runs to CSV or JSON, streamed from the database in chunks (a long run never sits in memory whole)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.errors import DatabaseError, PneumoFLError
from core.jsonsafe import json_safe
from core.persistence.engine import Database, describe_failure
from core.persistence.federation_records import flower_run_ids, list_rounds, list_sites
from core.persistence.models import metrics_table
from core.persistence.rows import final_rows
from core.persistence.runs import RunRecord, get_run
from core.reporting import RunReport

CSV_HEADER = ("run", "name", "value", "step", "dataset_type", "context", "site", "round")
CHUNK_ROWS = 5000
_M = metrics_table.c


def export_runs(db: Database, run_ids: Sequence[int], fmt: Literal["csv", "json"], path: str | Path) -> Path:
    """Write the runs ``run_ids`` to ``path`` and return it.

    Formats
    -------
    csv
        Long format, one metric value per line: ``run,name,value,step,dataset_type,context,site,round``
        (empty cells for no site/round; NaN as ``nan``). The final statistics follow each run's rows as
        ``final_epoch`` rows at the best epoch and the ROC as ``curve`` rows (derived from the report).
    json
        Always ``{"runs": [...]}``, even for one run. Each entry is ``{"run": {columns except config, and
        flower_run_ids}, "config": {...}, "final_stats": {"val": ..., "test": ..., "youden": ...},
        "sites": [{"site_id", "site_name"}], "rounds": [...],
        "metrics": [{"name", "value", "step", "dataset_type", "context", "site", "round"}]}``.
        Times are ISO 8601 UTC; non-finite numbers are ``null`` so any JSON reader accepts the file.

    The file is written next to ``path`` and renamed into place, so a failed export leaves no partial file.

    Raises
    ------
    ValueError
        If ``fmt`` is neither ``csv`` nor ``json``.
    RunNotFoundError
        If a run id does not exist.
    PneumoFLError
        If ``path`` cannot be written.
    DatabaseError
        If reading the database fails.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"export format must be 'csv' or 'json', not {fmt!r}")
    path = Path(path).expanduser()
    partial = path.with_name(f".{path.name}.partial")
    try:
        with db.session() as session, session.begin():
            records = [get_run(session, run_id) for run_id in run_ids]
            with open(partial, "w", newline="", encoding="utf-8") as stream:
                if fmt == "csv":
                    _write_csv(session, records, stream)
                else:
                    _write_json(session, records, stream)
        os.replace(partial, path)
    except OSError as exc:
        _remove(partial)
        raise PneumoFLError(
            f"Cannot write the export file {path}: {exc.strerror or exc}. Choose a folder you can write to."
        ) from None
    except SQLAlchemyError as exc:
        _remove(partial)
        raise DatabaseError(describe_failure(exc, db.engine.url, "read from")) from exc
    except BaseException:
        _remove(partial)
        raise
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _metric_chunks(session: Session, record: RunRecord) -> Iterator[Sequence[Any]]:
    """Yield lists of metric rows of one run, ``CHUNK_ROWS`` at a time (server-side cursor on PostgreSQL).

    The stored rows, then the final statistics as ``final_epoch`` and ``curve`` rows derived from the report.
    """
    query = (
        select(_M.metric_name, _M.metric_value, _M.step, _M.dataset_type, _M.context, _M.site_id, _M.round_number)
        .where(_M.run_id == record.id)
        .order_by(_M.id)
        .execution_options(yield_per=CHUNK_ROWS)
    )
    result = session.connection().execute(query)
    try:
        yield from result.partitions()
    finally:
        result.close()
    derived = final_rows(record.id, RunReport.from_dict(record.final_stats), record.best_epoch)
    if derived:
        yield [row[1:] for row in derived]


def _write_csv(session: Session, records: list[RunRecord], stream: TextIO) -> None:
    writer = csv.writer(stream)
    writer.writerow(CSV_HEADER)
    for record in records:
        for chunk in _metric_chunks(session, record):
            writer.writerows(
                (
                    record.id,
                    name,
                    math.nan if value is None else value,
                    step,
                    dataset_type,
                    context,
                    "" if site is None else site,
                    "" if round_number is None else round_number,
                )
                for name, value, step, dataset_type, context, site, round_number in chunk
            )


def _dump(value: Any) -> str:
    return json.dumps(json_safe(value), allow_nan=False)


def _write_json(session: Session, records: list[RunRecord], stream: TextIO) -> None:
    # Written piece by piece so the metrics array streams instead of being built in memory.
    stream.write('{"runs": [')
    for index, record in enumerate(records):
        run = {k: json_safe(v) for k, v in vars(record).items() if k != "config"}
        rounds = [json_safe(r) for r in list_rounds(session, record.id)]
        run["flower_run_ids"] = flower_run_ids(session, record.id)
        sites = [{"site_id": c, "site_name": n} for c, n in list_sites(session, record.id)]
        stream.write(("," if index else "") + "\n{")
        stream.write(f'"run": {_dump(run)}, "config": {_dump(record.config)}, ')
        stream.write(f'"final_stats": {_dump(record.final_stats or {})}, ')
        stream.write(f'"sites": {_dump(sites)}, "rounds": {_dump(rounds)}, "metrics": [')
        first = True
        for chunk in _metric_chunks(session, record):
            parts = [
                _dump(
                    {
                        "name": name,
                        "value": value,
                        "step": step,
                        "dataset_type": dataset_type,
                        "context": context,
                        "site": site,
                        "round": round_number,
                    }
                )
                for name, value, step, dataset_type, context, site, round_number in chunk
            ]
            if parts:
                stream.write(("\n" if first else ",\n") + ",\n".join(parts))
                first = False
        stream.write("]}")
    stream.write("\n]}\n")
