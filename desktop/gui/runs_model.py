"""A lazily paged table model over the runs table: thousands of runs never load at once."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from core.persistence import Database
from core.persistence.runs import RunRecord, count_runs, list_runs

COLUMNS = (
    ("id", "ID"),
    ("experiment_name", "Experiment"),
    ("training_mode", "Mode"),
    ("role", "Role"),
    ("status", "Status"),
    ("start_time", "Started"),
    ("best_epoch", "Best epoch"),
    ("best_val_auroc", "Val AUROC"),
    ("best_val_recall", "Val sensitivity"),
    ("best_val_specificity", "Val specificity"),
    ("duration", "Duration"),
)
PAGE = 200
Index = QModelIndex | QPersistentModelIndex


class RunsTableModel(QAbstractTableModel):
    """Rows come from :func:`list_runs` a page at a time (``fetchMore``); sorting and filters re-query."""

    def __init__(self, db: Database | None) -> None:
        super().__init__()
        self.db = db
        self.rows: list[RunRecord] = []
        self.total = 0
        self.filters: dict[str, str | None] = {"training_mode": None, "status": None, "name_contains": None}
        self.sort_by, self.descending = "start_time", True

    def set_database(self, db: Database | None) -> None:
        """Point at another database and reload."""
        self.db = db
        self.reload()

    def set_filters(self, **filters: str | None) -> None:
        """Filter by mode, status or name (``None`` or empty = any) and reload."""
        self.filters.update({k: (v or None) for k, v in filters.items()})
        self.reload()

    def reload(self) -> None:
        """Drop every row and fetch the first page."""
        self.beginResetModel()
        self.rows = []
        self.total = 0
        if self.db is not None:
            with self.db.begin() as session:
                self.total = count_runs(session, **self.filters)
                self.rows = self._page(session, 0)
        self.endResetModel()

    def _page(self, session: Any, offset: int) -> list[RunRecord]:
        return list_runs(
            session, **self.filters, sort_by=self.sort_by, descending=self.descending, limit=PAGE, offset=offset
        )

    # Qt model API -------------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        """Rows loaded so far."""
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        """One column per run field shown."""
        return 0 if parent.isValid() else len(COLUMNS)

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: B008
        """Whether more runs exist than are loaded."""
        return not parent.isValid() and len(self.rows) < self.total

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: B008
        """Load the next page (the view calls this as the user scrolls)."""
        if self.db is None or parent.isValid():
            return
        with self.db.begin() as session:
            more = self._page(session, len(self.rows))
        if more:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(more) - 1)
            self.rows.extend(more)
            self.endInsertRows()
        else:
            self.total = len(self.rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Formatted cell text; numbers right-aligned."""
        if not index.isValid():
            return None
        run = self.rows[index.row()]
        key = COLUMNS[index.column()][0]
        value = getattr(run, key)
        if role == Qt.ItemDataRole.DisplayRole:
            return _format(key, value)
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(value, (int, float)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and key == "status" and run.error_message:
            return run.error_message
        if role == Qt.ItemDataRole.UserRole:
            return run.id
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Column titles."""
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][1]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort in the database by any column."""
        self.sort_by = COLUMNS[column][0]
        self.descending = order == Qt.SortOrder.DescendingOrder
        self.reload()

    def run_at(self, row: int) -> RunRecord:
        """The run shown in ``row``."""
        return self.rows[row]


def _format(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "start_time":
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if key == "duration":
        minutes, secs = divmod(int(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
