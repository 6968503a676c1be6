"""The report as a PDF: the same HTML page laid out by Qt's QTextDocument and printed to a QPdfWriter (A4).

QTextDocument does not load ``data:`` URIs, so the charts are registered with the document as image resources
under the names the page's ``<img src>`` uses. The PDF is rendered into memory; the caller writes the file.
"""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMarginsF, QSizeF, QUrl
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QGuiApplication,
    QImage,
    QPageLayout,
    QPageSize,
    QPdfWriter,
    QTextBlock,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)

from core import __version__
from core.errors import PneumoFLError

RESOLUTION = 300  # dots per inch of the PDF's layout: text and charts stay sharp when printed
MARGIN_MM = 15.0
_ALWAYS_BEFORE = QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore
_app: list[QGuiApplication] = []  # keeps an application this module created alive for the process


def pdf_bytes(html: str, images: dict[str, bytes], *, title: str) -> bytes:
    """Lay out ``html`` on A4 pages and return the PDF.

    Parameters
    ----------
    html
        The page; its ``<img src>`` are keys of ``images``.
    images
        PNG files by name.
    title
        The PDF's document title.
    """
    gui_application()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buffer)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(MARGIN_MM, MARGIN_MM, MARGIN_MM, MARGIN_MM), QPageLayout.Unit.Millimeter)
    writer.setResolution(RESOLUTION)
    writer.setTitle(title)
    writer.setCreator(f"PneumoFL {__version__}")
    images_ = {name: QImage.fromData(png, "PNG") for name, png in images.items()}
    # Qt ignores CSS "page-break-after: avoid": lay out, move the first heading or chart that would end a page
    # without what follows it to the next page, and lay out again (a fresh document each time, as changing a
    # laid-out one leaves Qt's incremental layout incomplete). A report has a dozen headings at most.
    breaks: set[int] = set()
    document = _layout(html, images_, writer, breaks)
    for _ in range(document.blockCount()):
        orphan = _first_orphan(document, breaks)
        if orphan is None:
            break
        breaks.add(orphan)
        document = _layout(html, images_, writer, breaks)
    document.print_(writer)
    del writer  # finishes the file
    buffer.close()
    return bytes(data.data())


def _layout(html: str, images: dict[str, QImage], writer: QPdfWriter, breaks: set[int]) -> QTextDocument:
    """The page laid out for ``writer``, with a page break before each block number in ``breaks``."""
    document = QTextDocument()
    for name, image in images.items():
        document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), image)
    document.setHtml(html)
    for number in breaks:
        block = document.findBlockByNumber(number)
        fmt = block.blockFormat()
        fmt.setPageBreakPolicy(_ALWAYS_BEFORE)
        QTextCursor(block).setBlockFormat(fmt)
    # Lay out in the writer's own units with the page set: print_() then neither rescales from screen pixels
    # nor adds its own 2 cm margins on top of the writer's.
    document.documentLayout().setPaintDevice(writer)
    document.setDocumentMargin(0)
    document.setPageSize(QSizeF(writer.width(), writer.height()))
    return document


def _first_orphan(document: QTextDocument, breaks: set[int]) -> int | None:
    """The first block of the first run of headings and charts that does not share a page with what follows."""
    layout = document.documentLayout()
    height = document.pageSize().height()
    start: QTextBlock | None = None
    block = document.begin()
    while block.isValid():
        following = block.next()
        if not (_sticky(block) and following.isValid()):
            start = None
        else:
            start = start if start is not None else block
            first_page = int(_extent(layout, start)[0] // height)
            last_page = int((_extent(layout, following)[1] - 1) // height)
            if first_page != last_page and start.blockNumber() not in breaks:
                return start.blockNumber()
        block = following
    return None


def _sticky(block: QTextBlock) -> bool:
    """A heading, or a paragraph holding an image (Qt stands an image in the text as U+FFFC)."""
    return block.blockFormat().headingLevel() > 0 or "\ufffc" in block.text()


def _extent(layout: QAbstractTextDocumentLayout, block: QTextBlock) -> tuple[float, float]:
    """The top and bottom of a block's lines, as printed.

    A block's line positions include Qt's move to the next page, its bounding rectangle does not; inside a
    table cell the cell's rectangle is already placed on its page.
    """
    text = block.layout()
    if QTextCursor(block).currentTable() is None and text.lineCount():
        top = text.position().y()
        last = text.lineAt(text.lineCount() - 1)
        return top + text.lineAt(0).y(), top + last.y() + last.height()
    rect = layout.blockBoundingRect(block)
    return rect.top(), rect.bottom()


def gui_application() -> QGuiApplication:
    """The running Qt GUI application, or a new one (off-screen when there is no display, as on a server)."""
    app = QGuiApplication.instance()
    if app is not None:
        if not isinstance(app, QGuiApplication):
            raise PneumoFLError(
                "A PDF report needs a Qt GUI application, but this process runs a non-GUI Qt application; "
                "write the report as .html instead."
            )
        return app
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a headless server: Qt would abort looking for a screen
    app = QGuiApplication([])
    _app.append(app)
    return app
