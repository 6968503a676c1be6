"""``RunReport``: everything a run reports about its chosen model, read from any stored version of the document.

The document (``runs.final_stats``, ``TrainingEnd.final_stats``, the snapshot the browser gets, the model
card's ``statistics``) is version 2 (:data:`STATS_VERSION`)::

    {"version": 2, "threshold": t,
     "val": {metric: value}, "test": {...},
     "samples": {split: {"total", "positive"}},
     "intervals": {split: {metric: [low, high]}},
     "operating_points": {name: {"threshold", "val", "test", "intervals": {split: {...}}}},
     "youden": {"threshold", "val"},  # kept for readers older than version 2
     "calibration": {"temperature", split: {"brier", "ece", "bins"}, "before_scaling": {split: {...}}},
     "roc": {"fpr", "tpr"}, "degenerate": bool,
     "model": {"backbone", "image_size", "weights_sha256", "checkpoint"}, "privacy": {...}}

Runs recorded before version 2 (no ``version``, or 1) kept only ``val``, ``test``, ``youden`` and ``roc``:
:meth:`RunReport.from_dict` upgrades them, so Youden's threshold is an operating point like the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.reporting.records import (
    SPLITS,
    Calibration,
    ModelRecord,
    OperatingPoint,
    Privacy,
    Roc,
    SampleCounts,
    SplitMetrics,
)
from core.stats.names import OPERATING_POINTS

STATS_VERSION = 2
KNOWN_KEYS = frozenset(
    {
        "version",
        "threshold",
        *SPLITS,
        "samples",
        "intervals",
        "operating_points",
        "youden",
        "calibration",
        "roc",
        "degenerate",
        "model",
        "privacy",
    }
)


@dataclass(frozen=True)
class RunReport:
    """The final statistics of a run: its best checkpoint evaluated on validation and test.

    An empty report (``RunReport()``, falsy) is a run that ended before its model was evaluated.
    """

    threshold: float | None = None
    splits: Mapping[str, SplitMetrics] = field(default_factory=dict)
    samples: Mapping[str, SampleCounts] = field(default_factory=dict)
    operating_points: Mapping[str, OperatingPoint] = field(default_factory=dict)
    calibration: Calibration | None = None
    roc: Roc | None = None
    degenerate: bool | None = None
    model: ModelRecord | None = None
    privacy: Privacy | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    # -- reading and writing the document ---------------------------------------------------------------

    @classmethod
    def from_dict(cls, document: Mapping[str, Any] | None) -> RunReport:
        """Read any stored version of the document (``None`` or ``{}``: no statistics).

        Documents older than version 2 kept Youden's threshold (and its validation metrics) under ``youden``
        only; it becomes the ``youden`` operating point here, and nowhere else.
        """
        d = document or {}
        intervals = d.get("intervals") or {}
        splits = {s: SplitMetrics.from_dict(d[s], intervals.get(s)) for s in SPLITS if isinstance(d.get(s), Mapping)}
        points = {
            name: OperatingPoint.from_dict(name, point)
            for name, point in (d.get("operating_points") or {}).items()
            if isinstance(point, Mapping) and point.get("threshold") is not None
        }
        youden = d.get("youden")
        if not points and isinstance(youden, Mapping) and youden.get("threshold") is not None:
            points = {"youden": OperatingPoint.from_dict("youden", youden)}
        samples = {
            str(s): SampleCounts(int(c.get("total", 0)), int(c.get("positive", 0)))
            for s, c in (d.get("samples") or {}).items()
            if isinstance(c, Mapping)
        }
        calibration, roc, model, privacy = d.get("calibration"), d.get("roc"), d.get("model"), d.get("privacy")
        return cls(
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
            splits=splits,
            samples=samples,
            operating_points=points,
            calibration=Calibration.from_dict(calibration) if isinstance(calibration, Mapping) else None,
            roc=Roc.from_dict(roc) if isinstance(roc, Mapping) and roc.get("fpr") else None,
            degenerate=None if d.get("degenerate") is None else bool(d["degenerate"]),
            model=ModelRecord.from_dict(model) if isinstance(model, Mapping) and model else None,
            privacy=Privacy.from_dict(privacy) if isinstance(privacy, Mapping) and privacy else None,
            extra={k: v for k, v in d.items() if k not in KNOWN_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The current (version 2) document; ``{}`` for a run without statistics."""
        out: dict[str, Any] = {}
        if self.evaluated or self.samples or self.operating_points:
            out["version"] = STATS_VERSION
            if self.threshold is not None:
                out["threshold"] = self.threshold
        out |= {split: dict(metrics.values) for split, metrics in self.splits.items()}
        full = bool(self.operating_points)
        if full or self.samples:
            out["samples"] = {split: counts.to_dict() for split, counts in self.samples.items()}
        if full or any(m.intervals for m in self.splits.values()):
            out["intervals"] = {s: m.intervals_dict() for s, m in self.splits.items() if m.intervals}
        if full:
            out["operating_points"] = {name: point.to_dict() for name, point in self.operating_points.items()}
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        youden = self.operating_points.get("youden")
        if youden is not None:
            out["youden"] = {"threshold": youden.threshold}
            if youden.metrics("val"):
                out["youden"]["val"] = dict(youden.metrics("val").values)
        if self.roc:
            out["roc"] = self.roc.to_dict()
        if self.degenerate is not None:
            out["degenerate"] = self.degenerate
        if self.model is not None:
            out["model"] = self.model.to_dict()
        if self.privacy is not None:
            out["privacy"] = self.privacy.to_dict()
        return out | dict(self.extra)

    # -- what readers ask ----------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        """Whether there is anything to report (what ``to_dict()`` writes is not empty)."""
        return bool(
            self.splits
            or self.samples
            or self.operating_points
            or self.calibration is not None
            or self.roc
            or self.degenerate is not None
            or self.model is not None
            or self.privacy is not None
            or self.extra
        )

    @property
    def evaluated(self) -> list[str]:
        """The splits (``val``, ``test``) with final metrics; empty when the model was never evaluated."""
        return [s for s in SPLITS if self.splits.get(s)]

    @property
    def has_intervals(self) -> bool:
        """Whether bootstrap intervals were computed (not for per-round or pre-version-2 statistics)."""
        return any(m.intervals for m in self.splits.values())

    def metrics(self, split: str) -> SplitMetrics:
        """The metrics of ``split`` at the run's threshold (empty when not evaluated)."""
        return self.splits.get(split) or SplitMetrics()

    def points(self) -> list[OperatingPoint]:
        """The operating points, in the order :data:`OPERATING_POINTS` names them."""
        return [self.operating_points[n] for n in OPERATING_POINTS if n in self.operating_points]

    def threshold_or(self, default: float) -> float:
        """The run's decision threshold, or ``default`` when the document has none (runs before version 2)."""
        return default if self.threshold is None else self.threshold

    def headline(self) -> str:
        """``Best checkpoint at threshold 0.500`` (the title of every metric table)."""
        return "Best checkpoint" + (f" at threshold {self.threshold:.3f}" if self.threshold is not None else "")

    def metric_rows(self, rows: Sequence[tuple[str, str]], splits: Sequence[str] | None = None) -> list[list[str]]:
        """``[label, "value (low-high)" per split]`` for each ``(metric, label)`` of ``rows``."""
        splits = self.evaluated if splits is None else splits
        return [[label, *(self.metrics(s).text(key) for s in splits)] for key, label in rows]

    def point_cells(self, point: OperatingPoint, splits: Sequence[str], metrics: Sequence[str]) -> list[str]:
        """``"value (low-high)"`` of every metric on every split (split-major) at ``point``."""
        return [point.metrics(s).text(m) for s in splits for m in metrics]
