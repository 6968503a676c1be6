"""Names and number formats of the final statistics, importable without torch (for the CLI's text output)."""

from __future__ import annotations

OPERATING_POINTS = ("youden", "sens95", "spec95")
LABELS = {
    "youden": "Youden's J",
    "sens95": "Sensitivity >= 0.95",
    "spec95": "Specificity >= 0.95",
}


def interval_text(value: float | None, interval: list[float] | None) -> str:
    """``0.962 (0.931-0.984)``, or the value alone without an interval, or ``-``."""
    if value is None:
        return "-"
    return f"{value:.3f} ({interval[0]:.3f}-{interval[1]:.3f})" if interval else f"{value:.3f}"
