"""Checking a dataset before training: counts, balance, image integrity, duplicates and leakage, and splits."""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.data.discovery import CLASS_NAMES, SPLITS, DataSource, Problem, Sample, missing_message, scan
from core.data.images import probe_image
from core.data.splits import assign_splits
from core.errors import DataError

_EXAMPLES = 5


@dataclass
class DatasetSummary:
    """What a dataset holds and what is wrong with it; ``problems`` with severity "error" block training."""

    source: str
    kind: str
    class_counts: dict[str, int]
    split_counts: dict[str, dict[str, int]]
    imbalance_ratio: float
    image_sizes: dict[str, tuple[int, int]]
    skipped: int
    problems: list[Problem] = field(default_factory=list)

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

    def format(self) -> str:
        """Return a multi-line report: counts, imbalance, splits, image sizes, skipped files and problems."""
        lines = [self.short()]
        if self.image_sizes:
            sizes = ", ".join(f"{key} {w}x{h}" for key, (w, h) in self.image_sizes.items())
            lines.append(f"Image sizes (width x height): {sizes}")
        if self.skipped:
            lines.append(f"Skipped: {self.skipped} unreadable image(s)")
        if self.problems:
            lines.append("Problems:")
            lines.extend(f"  {p.severity}: {p.message}" for p in self.problems)
        else:
            lines.append("No problems found.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (an infinite imbalance ratio becomes None)."""
        return {
            "source": self.source,
            "kind": self.kind,
            "ok": self.ok,
            "class_counts": dict(self.class_counts),
            "split_counts": {name: dict(c) for name, c in self.split_counts.items()},
            "imbalance_ratio": None if math.isinf(self.imbalance_ratio) else self.imbalance_ratio,
            "image_sizes": {key: list(value) for key, value in self.image_sizes.items()},
            "skipped": self.skipped,
            "problems": [{"severity": p.severity, "message": p.message} for p in self.problems],
        }


@dataclass
class PreparedDataset:
    """A checked dataset split three ways; ``test`` may be empty when no test split was asked for."""

    summary: DatasetSummary
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def inspect_dataset(
    source: DataSource,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    max_bad_fraction: float = 0.05,
    check_images: bool = True,
) -> PreparedDataset:
    """Find, check and split a dataset; never raises for data problems, which land in ``summary.problems``.

    Parameters
    ----------
    source
        The folder or CSV manifest.
    val_fraction, test_fraction
        Share of each class drawn for a split the source does not provide.
    seed
        Seed of the split.
    max_bad_fraction
        Missing plus unreadable images above this share of all images is an error; below it a warning.
    check_images
        Open every image to find damaged files, read sizes and find duplicates by content (reads every byte once).

    Returns
    -------
    PreparedDataset
        Only readable images are in the splits.
    """
    found = scan(source)
    problems = list(found.problems)
    samples = found.samples
    sizes: list[tuple[int, int]] = []
    digests: dict[Path, str] = {}
    bad: list[tuple[Path, str]] = []
    if check_images and samples:
        samples, sizes, digests, bad = _check_files(samples)
    if found.missing:
        problems.append(Problem("warning", missing_message(source, found.missing)))
    if bad:
        shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:_EXAMPLES])
        more = f" and {len(bad) - _EXAMPLES} more" if len(bad) > _EXAMPLES else ""
        problems.append(
            Problem("warning", f"{len(bad)} unreadable image(s) were skipped: {shown}{more}; replace or remove them.")
        )
    n_bad = len(bad) + len(found.missing)
    if n_bad and n_bad / (n_bad + len(samples)) > max_bad_fraction:
        problems.append(
            Problem(
                "error",
                f"{n_bad} of {n_bad + len(samples)} images in {source.path} are missing "
                f"or unreadable, more than the allowed {max_bad_fraction:.0%} "
                "(max_bad_fraction): fix or remove them.",
            )
        )

    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    if not samples and not any(p.severity == "error" for p in found.problems):
        problems.append(Problem("error", f"No usable images were found in {source.path}: check the path and layout."))
    labels_present = {s.label for s in samples}
    if samples and len(labels_present) == 1:
        (present,) = labels_present
        problems.append(
            Problem(
                "error",
                f"Only {CLASS_NAMES[present]} images were found in {source.path} "
                f"({len(samples)}); add {CLASS_NAMES[1 - present]} images, since a "
                "classifier needs both classes.",
            )
        )
    if samples:
        train, val, test, split_problems = assign_splits(samples, val_fraction, test_fraction, seed)
        problems.extend(split_problems)
        if len(labels_present) == 2:
            problems.extend(_split_problems(train, val, test, val_fraction, test_fraction))
    if digests:
        problems.extend(_duplicate_problems(train + val + test, digests))

    class_counts = _counts(samples)
    low, high = min(class_counts.values()), max(class_counts.values())
    summary = DatasetSummary(
        source=str(source.path),
        kind=source.resolved_kind(),
        class_counts=class_counts,
        split_counts={"train": _counts(train), "val": _counts(val), "test": _counts(test)},
        imbalance_ratio=high / low if low else math.inf,
        image_sizes=_size_stats(sizes),
        skipped=len(bad),
        problems=problems,
    )
    return PreparedDataset(summary=summary, train=train, val=val, test=test)


def prepare_dataset(
    source: DataSource,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    max_bad_fraction: float = 0.05,
    check_images: bool = True,
) -> PreparedDataset:
    """Run :func:`inspect_dataset` (same arguments) and refuse a dataset with errors.

    Raises
    ------
    DataError
        Listing every error, one per line, followed by the short summary.
    """
    prepared = inspect_dataset(
        source,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        max_bad_fraction=max_bad_fraction,
        check_images=check_images,
    )
    summary = prepared.summary
    if not summary.ok:
        lines = [f"The dataset at {source.path} cannot be used for training:"]
        lines.extend(f"- {p.message}" for p in summary.errors)
        lines.append(summary.short())
        raise DataError("\n".join(lines))
    return prepared


def _counts(samples: Iterable[Sample]) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for s in samples:
        counts[CLASS_NAMES[s.label]] += 1
    return counts


def _size_stats(sizes: list[tuple[int, int]]) -> dict[str, tuple[int, int]]:
    if not sizes:
        return {}
    array = np.asarray(sizes)
    median = np.median(array, axis=0)
    return {
        "min": (int(array[:, 0].min()), int(array[:, 1].min())),
        "median": (int(median[0]), int(median[1])),
        "max": (int(array[:, 0].max()), int(array[:, 1].max())),
    }


def _probe(sample: Sample) -> tuple[Sample, tuple[int, int] | None, str, str]:
    try:
        data = sample.path.read_bytes()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return sample, probe_image(sample.path, data), digest, ""
    except Exception as exc:  # noqa: BLE001 - any failure to read or parse means "unreadable"
        return sample, None, "", str(exc) or type(exc).__name__


def _check_files(
    samples: list[Sample],
) -> tuple[list[Sample], list[tuple[int, int]], dict[Path, str], list[tuple[Path, str]]]:
    """Read every file once: hash it and probe it. Threads overlap disk reads; hashing and zlib release the GIL."""
    good: list[Sample] = []
    sizes: list[tuple[int, int]] = []
    digests: dict[Path, str] = {}
    bad: list[tuple[Path, str]] = []
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for sample, size, digest, reason in pool.map(_probe, samples, chunksize=16):
            if size is None:
                bad.append((sample.path, reason))
                continue
            good.append(sample)
            sizes.append(size)
            digests[sample.path] = digest
    return good, sizes, digests, bad


def _split_problems(
    train: list[Sample], val: list[Sample], test: list[Sample], val_fraction: float, test_fraction: float
) -> list[Problem]:
    problems: list[Problem] = []
    for name, part, fraction in (("train", train, 1.0), ("val", val, val_fraction), ("test", test, test_fraction)):
        if not part:
            if name == "train" or (name == "val" and fraction > 0) or (name == "test" and fraction > 0):
                problems.append(
                    Problem(
                        "error",
                        f"The {name} split is empty after splitting: add images (a few "
                        "dozen per class at least) or change the split fractions.",
                    )
                )
            elif name == "val":
                problems.append(
                    Problem(
                        "warning",
                        "There is no val split (val_fraction is 0): validation metrics "
                        "and early stopping will not be available.",
                    )
                )
            continue
        present = {s.label for s in part}
        for label, class_name in enumerate(CLASS_NAMES):
            if label not in present:
                severity = "error" if name == "train" else "warning"
                problems.append(
                    Problem(
                        severity,
                        f"The {name} split has no {class_name} images: add more "
                        f"{class_name} images so every split holds both classes.",
                    )
                )
    return problems


def _duplicate_problems(samples: list[Sample], digests: dict[Path, str]) -> list[Problem]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[digests[s.path]].append(s)
    pairs: list[tuple[Sample, Sample]] = []
    leaks: list[tuple[Sample, Sample]] = []
    for group in groups.values():
        # Pair every copy with the first one (not all pairs), so a thousand blank images stay a thousand lines.
        pairs.extend((group[0], other) for other in group[1:])
        in_train = [s for s in group if s.split == "train"]
        if in_train:
            leaks.extend((in_train[0], other) for other in group if other.split != "train")
    problems: list[Problem] = []
    if pairs:
        shown = "; ".join(f"{a.path} = {b.path}" for a, b in pairs[:_EXAMPLES])
        more = f" and {len(pairs) - _EXAMPLES} more" if len(pairs) > _EXAMPLES else ""
        conflicting = sum(a.label != b.label for a, b in pairs)
        labels = f" ({conflicting} with different labels)" if conflicting else ""
        problems.append(
            Problem("warning", f"{len(pairs)} pair(s) of identical images{labels}: {shown}{more}; remove the copies.")
        )
    if leaks:
        shown = "; ".join(f"{a.path} ({a.split}) = {b.path} ({b.split})" for a, b in leaks[:_EXAMPLES])
        other = sorted({s.split for pair in leaks for s in pair if s.split != "train"}, key=SPLITS.index)
        problems.append(
            Problem(
                "warning",
                f"{len(leaks)} image(s) in {'/'.join(map(str, other))} are identical to "
                f"images in train (leakage: {shown}); scores on those splits will look "
                "better than they are, so remove the copies.",
            )
        )
    return problems
