"""Small widgets shared by the pages: the error banner (a sentence, with details on request), a form's row."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class MessageBanner(QFrame):
    """A dismissable message at the top of a page: a plain sentence, with the technical details folded away."""

    STYLES = {
        "error": "background:#fdecea; border:1px solid #f5c2c0; color:#611a15;",
        "info": "background:#e8f4fd; border:1px solid #b6dcf7; color:#0c3c60;",
        "warning": "background:#fff4e5; border:1px solid #ffd8a8; color:#663c00;",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBanner")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QPushButton("&Details")
        self.details_button.setCheckable(True)
        self.close_button = QPushButton("Dis&miss")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setVisible(False)
        self.details.setMaximumHeight(160)
        row = QHBoxLayout()
        row.addWidget(self.message, 1)
        row.addWidget(self.details_button)
        row.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.details)
        self.details_button.toggled.connect(self.details.setVisible)
        self.close_button.clicked.connect(self.hide)
        self.kind = ""
        self.hide()

    def show_message(self, text: str, details: str = "", kind: str = "error") -> None:
        """Show ``text``; ``details`` (a traceback, say) only when the user asks."""
        self.kind = kind
        self.setStyleSheet(f"#messageBanner {{{self.STYLES[kind]}}}")
        self.message.setText(text)
        self.details.setPlainText(details)
        self.details_button.setVisible(bool(details))
        self.details_button.setChecked(False)
        self.show()

    def text(self) -> str:
        """The sentence shown (empty when hidden)."""
        return self.message.text() if self.isVisible() else ""


def form_row(*widgets: QWidget) -> QWidget:
    """Widgets side by side in one form row; text fields and lists take the spare width."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, (QLineEdit, QListWidget)) else 0)
    return box
