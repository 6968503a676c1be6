"""Growable numpy series for charts: appends are O(1) amortised, reads are views (no copies per redraw)."""

from __future__ import annotations

import numpy as np


class Series:
    """An (x, y) series that grows by doubling its buffers."""

    __slots__ = ("_n", "_x", "_y", "version")

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0
        self.version = 0  # bumped on every change so views redraw only what changed

    def __len__(self) -> int:
        return self._n

    def append(self, x: float, y: float) -> None:
        """Add one point."""
        if self._n == len(self._x):
            self._grow(self._n * 2)
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1
        self.version += 1

    def replace(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Replace all points at once (history loaded from the database)."""
        self._x = np.asarray(xs, dtype=np.float64).copy()
        self._y = np.asarray(ys, dtype=np.float64).copy()
        self._n = len(self._x)
        self.version += 1

    def clear(self) -> None:
        """Remove every point."""
        self._n = 0
        self.version += 1

    @property
    def x(self) -> np.ndarray:
        """The x values (a view)."""
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        """The y values (a view)."""
        return self._y[: self._n]

    def last(self) -> float | None:
        """The latest y value, if any."""
        return float(self._y[self._n - 1]) if self._n else None

    def _grow(self, capacity: int) -> None:
        self._x = np.resize(self._x, max(capacity, 16))
        self._y = np.resize(self._y, max(capacity, 16))


class SeriesStore:
    """Named series, created on first use."""

    def __init__(self) -> None:
        self._series: dict[str, Series] = {}

    def __getitem__(self, name: str) -> Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = Series()
        return series

    def __contains__(self, name: str) -> bool:
        return name in self._series and len(self._series[name]) > 0

    def names(self) -> list[str]:
        """Names of the non-empty series."""
        return [n for n, s in self._series.items() if len(s)]

    def clear(self) -> None:
        """Empty every series."""
        for series in self._series.values():
            series.clear()
