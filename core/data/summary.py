"""What a dataset check found: counts, splits, formats, sizes and every problem, as text and as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from core.data.discovery import Problem, Sample

SHOWN_PROBLEMS = 20
"""How many problems the text report lists before it points to the full listing."""


@dataclass
class DatasetSummary:
    """What a dataset holds and what is wrong with it; ``problems`` with severity "error" block training.

    ``file_types`` counts usable images by format ("PNG", "DICOM JPEG 2000 lossless", ...);
    ``converted_to_grey`` counts colour images (RGB, YBR_*, PALETTE COLOR) turned grey by luminance.
    """

    source: str
    kind: str
    class_counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    imbalance_ratio: float
    image_sizes: dict[str, tuple[int, int]]
    skipped: int
    problems: list[Problem] = field(default_factory=list)
    file_types: dict[str, int] = field(default_factory=dict)
    converted_to_grey: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem has severity "error"."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        """The problems that block training."""
        return [p for p in self.problems if p.severity == "error"]

    def short(self) -> str:
        """Return the counts part of :meth:`format` (no problems), a few lines."""
        total = sum(self.class_counts.values())
        classes = ", ".join(f"{name} {n}" for name, n in self.class_counts.items())
        ratio = "n/a" if math.isinf(self.imbalance_ratio) else f"{self.imbalance_ratio:.2f}:1"
        lines = [f"Dataset: {self.source} ({self.kind})", f"Images: {total} usable ({classes}); imbalance {ratio}"]
        splits = " | ".join(
            f"{name} {sum(c.values())} ({', '.join(f'{cls} {n}' for cls, n in c.items())})"
            for name, c in self.split_counts.items()
        )
        lines.append(f"Splits: {splits}")
        return "\n".join(lines)

    def format(self, limit: int | None = SHOWN_PROBLEMS, more_hint: str = "") -> str:
        """Return a multi-line report: counts, splits, formats, image sizes, skipped files and problems.

        Parameters
        ----------
        limit
            List at most this many problems (errors first); None lists all.
        more_hint
            What to do to see the rest, appended when some are left out.
        """
        lines = [self.short()]
        if self.file_types:
            lines.append("Formats: " + _formats_line(self.file_types))
        if self.converted_to_grey:
            lines.append(f"Colour images converted to grey (luminance): {self.converted_to_grey}")
        if self.image_sizes:
            sizes = ", ".join(f"{key} {w}x{h}" for key, (w, h) in self.image_sizes.items())
            lines.append(f"Image sizes (width x height): {sizes}")
        if self.skipped:
            lines.append(f"Skipped: {self.skipped} file(s) that cannot be used")
        if not self.problems:
            lines.append("No problems found.")
            return "\n".join(lines)
        ordered = self.errors + [p for p in self.problems if p.severity != "error"]
        shown = ordered if limit is None else ordered[:limit]
        lines.append(f"Problems ({len(self.errors)} error(s), {len(ordered) - len(self.errors)} warning(s)):")
        lines.extend(f"  {p.severity}: {p.message}" for p in shown)
        if len(shown) < len(ordered):
            lines.append(f"  ... and {len(ordered) - len(shown)} more{': ' + more_hint if more_hint else '.'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (an infinite imbalance ratio becomes None).

        ``problems`` holds every sentence with its kind and files; ``files`` lists every file a problem is
        about, with the kind and the sentence.
        """
        files = [
            {"path": path, "kind": p.kind, "severity": p.severity, "reason": p.message}
            for p in self.problems
            for path in p.paths
        ]
        return {
            "source": self.source,
            "kind": self.kind,
            "ok": self.ok,
            "class_counts": dict(self.class_counts),
            "split_counts": {name: dict(c) for name, c in self.split_counts.items()},
            "imbalance_ratio": None if math.isinf(self.imbalance_ratio) else self.imbalance_ratio,
            "image_sizes": {key: list(value) for key, value in self.image_sizes.items()},
            "file_types": dict(self.file_types),
            "converted_to_grey": self.converted_to_grey,
            "skipped": self.skipped,
            "counts": {"errors": len(self.errors), "warnings": len(self.problems) - len(self.errors)},
            "problems": [
                {"severity": p.severity, "kind": p.kind, "message": p.message, "paths": list(p.paths)}
                for p in self.problems
            ],
            "files": files,
        }


def _formats_line(file_types: dict[str, int]) -> str:
    """``PNG 4, JPEG 4, DICOM 40 (JPEG 2000 2, RLE 4, ...)`` from the "DICOM <syntax>" counts."""
    dicom = {name.removeprefix("DICOM "): n for name, n in file_types.items() if name.startswith("DICOM ")}
    parts = [f"{name} {n}" for name, n in sorted(file_types.items()) if not name.startswith("DICOM ")]
    if dicom:
        syntaxes = ", ".join(f"{name} {n}" for name, n in sorted(dicom.items()))
        parts.append(f"DICOM {sum(dicom.values())} ({syntaxes})")
    return ", ".join(parts)


@dataclass
class PreparedDataset:
    """A checked dataset split three ways; ``test`` may be empty when no test split was asked for."""

    summary: DatasetSummary
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
