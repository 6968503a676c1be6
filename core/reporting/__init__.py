"""What a run reports about its chosen model: typed records, read from and written to the stored document.

``from core.reporting import RunReport`` stays torch-free (the CLI's text output and the report read it);
the evaluation that builds a report from logits is :func:`core.reporting.evaluate.evaluate_report`.
"""

from core.reporting.records import (
    Calibration,
    ModelRecord,
    OperatingPoint,
    Privacy,
    Roc,
    SampleCounts,
    SplitCalibration,
    SplitMetrics,
)
from core.reporting.report import STATS_VERSION, RunReport

__all__ = [
    "STATS_VERSION",
    "Calibration",
    "ModelRecord",
    "OperatingPoint",
    "Privacy",
    "Roc",
    "RunReport",
    "SampleCounts",
    "SplitCalibration",
    "SplitMetrics",
]
