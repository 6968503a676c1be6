"""Persistence: models, migrations, the session factory, repositories, the database sink and exports.

Open the database once per process with :meth:`Database.open` (it migrates and marks interrupted runs), then
use ``with db.begin() as session:`` and the functions of :mod:`core.persistence.runs` (lifecycle and listing),
:mod:`core.persistence.metric_reads`, :mod:`core.persistence.federation_records` and :mod:`core.persistence.predictions`.
"""

from core.persistence.engine import (
    Database,
    create_db_engine,
    default_database_url,
    mark_interrupted_runs,
    upgrade_database,
    url_for_display,
)
from core.persistence.export import export_runs
from core.persistence.file_sink import FileSink
from core.persistence.runs import MetricRow, RunRecord
from core.persistence.sink import DatabaseSink

__all__ = [
    "Database",
    "DatabaseSink",
    "FileSink",
    "MetricRow",
    "RunRecord",
    "create_db_engine",
    "default_database_url",
    "export_runs",
    "mark_interrupted_runs",
    "upgrade_database",
    "url_for_display",
]
