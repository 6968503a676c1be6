"""The parts of a run report: frozen, typed records that read and write their piece of the stored document.

Every record is built from the JSON the database, the browser and the model card hold (``from_dict``) and
writes it back unchanged (``to_dict``). They import neither torch nor Qt, so the CLI's text output, the
report and the browser's snapshot read them cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.stats.names import interval_text

Interval = tuple[float, float]
SPLITS = ("val", "test")
SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}
CONFUSION = ("tp", "fp", "tn", "fn")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class SplitMetrics:
    """Every metric of one split at one threshold, with its 95% bootstrap interval where one was computed.

    ``values`` holds what :func:`core.training.evaluation.metrics_at` gives (``auroc``, ``recall``,
    ``specificity``, ``precision``, ``f1``, ``accuracy``, ``cm_tp`` ...); ``intervals`` ``[low, high]`` by metric.
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    intervals: Mapping[str, Interval] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Any, intervals: Any = None) -> SplitMetrics:
        """Read a split's metrics and (optional) intervals."""
        bounds = {str(k): (v[0], v[1]) for k, v in _mapping(intervals).items() if v}
        return cls(values=dict(_mapping(values)), intervals=bounds)

    def __bool__(self) -> bool:
        return bool(self.values)

    def get(self, metric: str) -> float | None:
        """The value of ``metric`` (``None`` when not recorded)."""
        return _float(self.values.get(metric))

    def interval(self, metric: str) -> Interval | None:
        """The 95% interval of ``metric``, if computed."""
        return self.intervals.get(metric)

    def text(self, metric: str) -> str:
        """``0.962 (0.931-0.984)``, the value alone, or ``-``."""
        bounds = self.interval(metric)
        return interval_text(self.get(metric), list(bounds) if bounds else None)

    @property
    def confusion(self) -> dict[str, int] | None:
        """``{"tp", "fp", "tn", "fn"}`` counts, or ``None`` when the split has no confusion matrix."""
        if any(self.values.get(f"cm_{k}") is None for k in CONFUSION):
            return None
        return {k: int(self.values[f"cm_{k}"]) for k in CONFUSION}

    def counts_text(self) -> str:
        """``TP / FP / TN / FN`` counts as ``12 / 3 / 40 / 1`` (missing counts as 0)."""
        return " / ".join(str(int(self.values.get(f"cm_{k}", 0) or 0)) for k in CONFUSION)

    def intervals_dict(self) -> dict[str, list[float]]:
        """The intervals as stored: ``{metric: [low, high]}``."""
        return {k: list(v) for k, v in self.intervals.items()}


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen on validation (``youden``, ``sens95``, ``spec95``) and what it gives on each split."""

    name: str
    threshold: float
    splits: Mapping[str, SplitMetrics] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, point: Mapping[str, Any]) -> OperatingPoint:
        """Read ``operating_points[name]``: ``threshold``, ``val``, ``test`` and ``intervals``."""
        intervals = _mapping(point.get("intervals"))
        splits = {
            s: SplitMetrics.from_dict(point[s], intervals.get(s)) for s in SPLITS if isinstance(point.get(s), Mapping)
        }
        return cls(name=name, threshold=float(point["threshold"]), splits=splits)

    def metrics(self, split: str) -> SplitMetrics:
        """The metrics on ``split`` at this threshold (empty when not evaluated there)."""
        return self.splits.get(split) or SplitMetrics()

    def to_dict(self) -> dict[str, Any]:
        """``{"threshold", "intervals", "val", "test"}`` as stored."""
        out: dict[str, Any] = {"threshold": self.threshold, "intervals": {}}
        for split, metrics in self.splits.items():
            out[split] = dict(metrics.values)
            if metrics.intervals:
                out["intervals"][split] = metrics.intervals_dict()
        return out


@dataclass(frozen=True)
class SplitCalibration:
    """Brier score, expected calibration error and the reliability bins (10 equal-width) of one split."""

    brier: float | None
    ece: float | None
    bins: Mapping[str, list[Any]] | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> SplitCalibration:
        """Read ``{"brier", "ece", "bins"}`` (``bins`` is left out before scaling)."""
        bins = value.get("bins")
        return cls(brier=_float(value.get("brier")), ece=_float(value.get("ece")), bins=dict(bins) if bins else None)

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        out: dict[str, Any] = {"brier": self.brier, "ece": self.ece}
        if self.bins is not None:
            out["bins"] = dict(self.bins)
        return out

    def points(self) -> list[tuple[float, float]]:
        """``(mean probability, observed rate)`` of every filled bin, for a reliability diagram."""
        if not self.bins:
            return []
        pairs = zip(self.bins.get("mean_probability") or [], self.bins.get("observed") or [])
        return [(p, o) for p, o in pairs if p is not None and o is not None]


@dataclass(frozen=True)
class Calibration:
    """How well probabilities match observed rates, per split; the temperature fitted on validation, if any."""

    temperature: float | None = None
    splits: Mapping[str, SplitCalibration] = field(default_factory=dict)
    before_scaling: Mapping[str, SplitCalibration] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Calibration:
        """Read ``{"temperature", "val", "test", "before_scaling"}``."""
        splits = {s: SplitCalibration.from_dict(value[s]) for s in SPLITS if isinstance(value.get(s), Mapping)}
        before = {s: SplitCalibration.from_dict(v) for s, v in _mapping(value.get("before_scaling")).items()}
        return cls(temperature=_float(value.get("temperature")), splits=splits, before_scaling=before)

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        out: dict[str, Any] = {"temperature": self.temperature}
        out |= {split: c.to_dict() for split, c in self.splits.items()}
        if self.before_scaling:
            out["before_scaling"] = {split: c.to_dict() for split, c in self.before_scaling.items()}
        return out

    def lines(self) -> list[str]:
        """``Validation: Brier 0.1234, ECE 0.0456`` per split (the text the run view and the CLI show)."""
        return [f"{SPLIT_NAMES[s]}: Brier {c.brier:.4f}, ECE {c.ece:.4f}" for s, c in self.splits.items()]


@dataclass(frozen=True)
class SampleCounts:
    """Images of a split and how many of them show pneumonia."""

    total: int
    positive: int

    @property
    def normal(self) -> int:
        """Images without pneumonia."""
        return self.total - self.positive

    def to_dict(self) -> dict[str, int]:
        """As stored."""
        return {"total": self.total, "positive": self.positive}


@dataclass(frozen=True)
class ModelRecord:
    """Where the evaluated weights are and what they are: what ``predict`` and ``model export`` check."""

    backbone: str
    image_size: int
    weights_sha256: str
    checkpoint: str | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ModelRecord:
        """Read ``{"backbone", "image_size", "weights_sha256", "checkpoint"}``."""
        return cls(
            backbone=str(value.get("backbone") or ""),
            image_size=int(value.get("image_size") or 0),
            weights_sha256=str(value.get("weights_sha256") or ""),
            checkpoint=value.get("checkpoint"),
        )

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "weights_sha256": self.weights_sha256,
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class Privacy:
    """The differential privacy a federation spent (Renyi DP accounting)."""

    epsilon: float
    delta: float
    releases: int
    noise_multiplier: float | None = None
    clipping: str | None = None
    clipping_norm: float | None = None
    accounting: str = ""

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Privacy:
        """Read the ``privacy`` entry."""
        return cls(
            epsilon=_nan(value.get("epsilon")),
            delta=_nan(value.get("delta")),
            releases=int(value.get("releases", 0)),
            noise_multiplier=value.get("noise_multiplier"),
            clipping=value.get("clipping"),
            clipping_norm=value.get("clipping_norm"),
            accounting=str(value.get("accounting", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "releases": self.releases,
            "noise_multiplier": self.noise_multiplier,
            "clipping": self.clipping,
            "clipping_norm": self.clipping_norm,
            "accounting": self.accounting,
        }


@dataclass(frozen=True)
class Roc:
    """The validation ROC curve (at most 200 points, first and last kept)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Roc:
        """Read ``{"fpr": [...], "tpr": [...]}``."""
        return cls(fpr=tuple(value.get("fpr") or ()), tpr=tuple(value.get("tpr") or ()))

    def __bool__(self) -> bool:
        return bool(self.fpr)

    def to_dict(self) -> dict[str, list[float]]:
        """As stored."""
        return {"fpr": list(self.fpr), "tpr": list(self.tpr)}
