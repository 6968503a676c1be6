"""One way to make a value fit for JSON: for the database's JSON columns, exports and the browser's snapshots."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as ``None``, datetimes as ISO text, numpy scalars as Python numbers, keys as text.

    PostgreSQL's JSONB and browsers' ``JSON.parse`` reject NaN; everything else passes through unchanged.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalars, without importing numpy
        return json_safe(value.item())
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
