"""One X-ray with its Grad-CAM heatmap blended on top: heatmap on/off and opacity, scaled to the widget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap, QResizeEvent
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSizePolicy, QSlider, QVBoxLayout, QWidget

from core.errors import DataError


def to_qimage(rgb: np.ndarray) -> QImage:
    """An RGB ``uint8`` (H, W, 3) array as a QImage that owns its pixels."""
    height, width, _ = rgb.shape
    data = np.ascontiguousarray(rgb)
    return QImage(data.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class HeatmapImageView(QWidget):
    """Shows ``set_image(path, heatmap)``; the heatmap checkbox and opacity slider redraw at once."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.picture = QLabel("Read images to see them here.")
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(320, 320)
        self.picture.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.show_heatmap = QCheckBox("&Heatmap")
        self.show_heatmap.setChecked(True)
        self.show_heatmap.setToolTip("Grad-CAM: where the model found evidence for pneumonia")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.setToolTip("Heatmap opacity")
        self.show_heatmap.toggled.connect(self._redraw)
        self.show_heatmap.toggled.connect(self.opacity.setEnabled)
        self.opacity.valueChanged.connect(self._redraw)
        controls = QHBoxLayout()
        controls.addWidget(self.show_heatmap)
        controls.addWidget(QLabel("Opacity"))
        controls.addWidget(self.opacity, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.picture, 1)
        layout.addLayout(controls)
        self._grey: np.ndarray | None = None
        self._heatmap: np.ndarray | None = None
        self.shown: QImage | None = None  # what is on screen, at full resolution (for tests and saving)

    def set_image(self, path: Path | None, heatmap: np.ndarray | None) -> None:
        """Show ``path`` (decoded like training does, at up to 512 px) with ``heatmap`` when there is one."""
        self._heatmap = heatmap
        self.show_heatmap.setEnabled(heatmap is not None)
        self.opacity.setEnabled(heatmap is not None and self.show_heatmap.isChecked())
        if path is None:
            self._grey = None
        else:
            try:
                from core.data.images import decode_image  # pydicom: when an image is first shown
                from core.inference.overlay import DISPLAY_SIZE

                self._grey = decode_image(path, size=DISPLAY_SIZE).pixels
            except DataError as exc:
                self._grey = None
                self.picture.setText(str(exc))
        self._redraw()

    def _redraw(self) -> None:
        if self._grey is None:
            self.shown = None
            self.picture.setPixmap(QPixmap())
            return
        if self._heatmap is not None and self.show_heatmap.isChecked():
            from core.inference.overlay import blend

            rgb = blend(self._grey, self._heatmap, self.opacity.value() / 100)
        else:
            rgb = np.repeat(self._grey[..., None], 3, axis=2)
        self.shown = to_qimage(rgb)
        self._fit()

    def _fit(self) -> None:
        if self.shown is not None:
            pixmap = QPixmap.fromImage(self.shown)
            self.picture.setPixmap(
                pixmap.scaled(
                    self.picture.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
                )
            )

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Keep the picture fitted to the widget."""
        super().resizeEvent(event)
        self._fit()
