"""What does not fit in a window: content cut off or squeezed, charts or tables on top of each other, labels cut.

Used by the layout tests (tests/desktop/test_fit.py) on real widgets. Content is what a user reads: tables, text
views and charts (pyqtgraph views, and each plot inside them). Content inside an area that scrolls as a whole may
extend past the window; anything else must lie inside it.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QPlainTextEdit, QScrollArea, QTextEdit, QWidget

CONTENT = (QAbstractItemView, pg.GraphicsView, QPlainTextEdit, QTextEdit)
MIN_CONTENT = (80, 48)  # px: a table or text view smaller than this shows nothing useful
MIN_PLOT = (140, 90)  # px: a chart smaller than this has no readable axis


def _in_window(widget: QWidget, root: QWidget) -> tuple[QRect, QRect, bool]:
    """``(rect, visible part, scrolls)`` of ``widget`` in ``root``'s coordinates; ``scrolls`` when it is inside a
    scroll area's viewport (the area, not the window, shows it)."""
    rect = QRect(widget.mapTo(root, QPoint(0, 0)), widget.size())
    visible = QRect(rect)
    parent = widget.parentWidget()
    while parent is not None and parent is not root:
        area = parent.parentWidget()
        if isinstance(area, QScrollArea) and parent is area.viewport():
            return rect, visible, True
        visible = visible & QRect(parent.mapTo(root, QPoint(0, 0)), parent.size())
        parent = parent.parentWidget()
    return rect, visible & QRect(QPoint(0, 0), root.size()), False


def _inside_content(widget: QWidget, root: QWidget) -> bool:
    """Whether ``widget`` is part of another content widget (a table's own parts, a chart's)."""
    parent = widget.parentWidget()
    while parent is not None and parent is not root:
        if isinstance(parent, CONTENT):
            return True
        parent = parent.parentWidget()
    return False


def _name(widget: QWidget) -> str:
    owner = widget.parentWidget()
    while owner is not None and not owner.objectName() and type(owner).__module__.startswith("PySide6"):
        owner = owner.parentWidget()
    where = (owner.objectName() or type(owner).__name__) if owner is not None else "window"
    return f"{type(widget).__name__} in {where}"


def layout_problems(root: QWidget, size: tuple[int, int] | None = None) -> list[str]:
    """Sentences naming what does not fit in ``root`` as it is shown now (empty when everything fits).

    ``size``: the size ``root`` was asked to take; a layout whose minimum is larger makes the window larger than
    the screen, so that is a problem too.
    """
    problems = []
    if size is not None and (root.width(), root.height()) != size:
        hint = root.minimumSizeHint()
        problems.append(
            f"{type(root).__name__} needs at least {hint.width()}x{hint.height()}, more than {size[0]}x{size[1]}"
        )
    regions: dict[str, QRect] = {}
    for widget in root.findChildren(QWidget):
        if not widget.isVisibleTo(root):
            continue
        if isinstance(widget, QLabel) and widget.text() and not widget.wordWrap() and widget.pixmap().isNull():
            needed = widget.sizeHint().width()
            if widget.width() + 2 < needed:
                problems.append(f"label {widget.text()[:40]!r} is cut: it needs {needed} px and has {widget.width()}")
            continue
        if not isinstance(widget, CONTENT) or isinstance(widget, QHeaderView) or _inside_content(widget, root):
            continue
        rect, visible, scrolls = _in_window(widget, root)
        name = f"{_name(widget)} #{len(regions)}"
        if not scrolls and visible != rect:
            problems.append(f"{name} is cut off: {_box(rect)} shows only {_box(visible)}")
        low_w, low_h = MIN_CONTENT
        if visible.width() < low_w or visible.height() < low_h:
            problems.append(f"{name} is squeezed to {visible.width()}x{visible.height()}")
        if isinstance(widget, pg.GraphicsView):
            problems += _plot_problems(widget, name)
        if not scrolls:
            regions[name] = visible
    names = sorted(regions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if regions[a].intersects(regions[b]):
                problems.append(f"{a} and {b} overlap")
    return problems


def _plot_problems(view: pg.GraphicsView, name: str) -> list[str]:
    """Each plot inside a chart view lies inside its viewport, has room for its axes, and overlaps no other."""
    viewport = QRect(QPoint(0, 0), view.viewport().size())
    plots = [item for item in view.scene().items() if isinstance(item, pg.PlotItem) and item.isVisible()]
    rects = {
        f"{name} plot {item.titleLabel.text or i}": view.mapFromScene(item.sceneBoundingRect()).boundingRect()
        for i, item in enumerate(plots)
    }
    problems = []
    for label, rect in rects.items():
        if not viewport.contains(rect.adjusted(1, 1, -1, -1)):
            problems.append(f"{label} is cut off: {_box(rect)} in a {viewport.width()}x{viewport.height()} view")
        if rect.width() < MIN_PLOT[0] or rect.height() < MIN_PLOT[1]:
            problems.append(f"{label} is squeezed to {rect.width()}x{rect.height()}")
    labels = sorted(rects)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if rects[a].adjusted(1, 1, -1, -1).intersects(rects[b].adjusted(1, 1, -1, -1)):
                problems.append(f"{a} and {b} overlap")
    return problems


def _box(rect: QRect) -> str:
    return f"{rect.width()}x{rect.height()}+{rect.x()}+{rect.y()}"
