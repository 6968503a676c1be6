"""The Read images page's file dialogs and its results table (the page replaces the dialogs in tests)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QAbstractItemView, QFileDialog, QHeaderView, QTableWidget, QWidget

IMAGE_FILTER = "X-ray images (*.png *.jpg *.jpeg *.dcm *.PNG *.JPG *.JPEG *.DCM)"


def ask_images(parent: QWidget) -> list[str]:
    """X-ray files the user picks."""
    paths, _ = QFileDialog.getOpenFileNames(parent, "Choose X-rays", "", IMAGE_FILTER)
    return paths


def ask_folder(parent: QWidget) -> str:
    """A folder of X-rays ("" when cancelled)."""
    return QFileDialog.getExistingDirectory(parent, "Choose a folder of X-rays")


def ask_model(parent: QWidget) -> str:
    """An exported model file ("" when cancelled)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Open an exported model", "", "Exported models (*.onnx *.pt)")
    return path


def ask_csv(parent: QWidget) -> str:
    """Where to export the readings ("" when cancelled)."""
    path, _ = QFileDialog.getSaveFileName(parent, "Export readings", "readings.csv", "CSV (*.csv)")
    return path


def readings_table(columns: Sequence[str]) -> QTableWidget:
    """A read-only table, one reading per row, selected a row at a time."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    return table
