"""Checking a dataset before training: counts, balance, every image decoded once, duplicates, leakage, splits."""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.data.dicom import RADIOGRAPH_MODALITIES
from core.data.discovery import CLASS_NAMES, SPLITS, DataSource, Problem, Sample, missing_message, scan
from core.data.file_check import FileReport, Progress, check_files
from core.data.splits import assign_splits
from core.data.summary import DatasetSummary, PreparedDataset
from core.errors import DataError

if TYPE_CHECKING:
    from core.config import RunConfig

_EXAMPLES = 5


def inspect_dataset(
    source: DataSource,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    max_bad_fraction: float = 0.05,
    check_images: bool = True,
    image_size: int = 224,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
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
        Missing plus unusable images above this share of all images is an error; below it a warning per file.
    check_images
        Read and decode every image as training will (at ``image_size``), to find files training cannot use,
        read sizes and formats and find duplicates by content. Each file is read once.
    image_size
        The side length training resizes to.
    progress
        Called as ``progress(done, total)`` while images are checked.
    cancel
        Set it to stop the check.

    Returns
    -------
    PreparedDataset
        Only usable images are in the splits.

    Raises
    ------
    core.errors.RunCancelled
        When ``cancel`` was set during the check.
    """
    found = scan(source)
    problems = list(found.problems)
    samples = found.samples
    reports: list[FileReport] = []
    bad: list[FileReport] = []
    if check_images and samples:
        reports = check_files(samples, image_size, progress=progress, cancel=cancel)
        bad = [r for r in reports if not r.ok]
        reports = [r for r in reports if r.ok]
        samples = [r.sample for r in reports]
    if found.missing:
        problems.append(Problem("warning", missing_message(source, found.missing), "missing", tuple(found.missing)))
    problems.extend(Problem("warning", r.problem, r.problem_kind, (str(r.sample.path),)) for r in bad)
    n_bad = len(bad) + len(found.missing)
    if n_bad and n_bad / (n_bad + len(samples)) > max_bad_fraction:
        problems.append(
            Problem(
                "error",
                f"{n_bad} of {n_bad + len(samples)} images in {source.path} are missing "
                f"or cannot be used, more than the allowed {max_bad_fraction:.0%} "
                "(max_bad_fraction): fix or remove the files listed.",
                "too_many_bad",
            )
        )
    problems.extend(_modality_problems(reports))

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
                "single_class",
            )
        )
    if samples:
        train, val, test, split_problems = assign_splits(samples, val_fraction, test_fraction, seed)
        problems.extend(split_problems)
        if len(labels_present) == 2:
            problems.extend(_split_problems(train, val, test, val_fraction, test_fraction))
    if reports:
        digests = {r.sample.path: r.digest for r in reports}
        problems.extend(_duplicate_problems(train + val + test, digests))

    class_counts = _counts(samples)
    low, high = min(class_counts.values()), max(class_counts.values())
    summary = DatasetSummary(
        source=str(source.path),
        kind=source.resolved_kind(),
        class_counts=class_counts,
        split_counts={"train": _counts(train), "val": _counts(val), "test": _counts(test)},
        imbalance_ratio=high / low if low else math.inf,
        image_sizes=_size_stats([(r.width, r.height) for r in reports]),
        skipped=len(bad),
        problems=problems,
        file_types=dict(Counter(r.file_type for r in reports)),
        converted_to_grey=sum(r.converted_to_grey for r in reports),
    )
    return PreparedDataset(summary=summary, train=train, val=val, test=test)


def check_data(
    config: RunConfig, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> PreparedDataset:
    """Discover and check the dataset a run configuration names, decoding every image as training will.

    Never refuses the data (see :func:`require_trainable`).

    Parameters
    ----------
    config
        Data source, split fractions, seed, ``max_bad_fraction`` and ``image_size``.
    progress
        Called as ``progress(done, total)`` while the images are read.
    cancel
        Set it to stop the check (raises :class:`core.errors.RunCancelled`).
    """
    return inspect_dataset(
        DataSource.from_config(config),
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        max_bad_fraction=config.max_bad_fraction,
        image_size=config.image_size,
        progress=progress,
        cancel=cancel,
    )


def inspect_trainable(source: DataSource, **options: Any) -> PreparedDataset:
    """Run :func:`inspect_dataset` (same arguments) and refuse a dataset with errors (see :func:`require_trainable`)."""
    return require_trainable(inspect_dataset(source, **options))


def require_trainable(prepared: PreparedDataset) -> PreparedDataset:
    """Return ``prepared`` when it can be trained on.

    Raises
    ------
    DataError
        Listing every error, one per line, followed by the short summary.
    """
    summary = prepared.summary
    if not summary.ok:
        lines = [f"The dataset at {summary.source} cannot be used for training:"]
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


def _modality_problems(reports: list[FileReport]) -> list[Problem]:
    """One warning naming the DICOM images that may not be chest radiographs (they are still used)."""
    others = [r for r in reports if r.modality and r.modality not in RADIOGRAPH_MODALITIES]
    if not others:
        return []
    kinds = ", ".join(f"{m} {n}" for m, n in sorted(Counter(r.modality for r in others).items()))
    shown = ", ".join(str(r.sample.path) for r in others[:_EXAMPLES])
    more = f" and {len(others) - _EXAMPLES} more" if len(others) > _EXAMPLES else ""
    return [
        Problem(
            "warning",
            f"{len(others)} DICOM image(s) are not of a radiograph modality (CR, DX or DR) and may not be chest "
            f"X-rays (modality {kinds}; 'none' is a secondary capture or unlabelled): {shown}{more}. "
            "They are used; remove any that are not chest radiographs.",
            "not_radiograph",
            tuple(str(r.sample.path) for r in others),
        )
    ]


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
                        "empty_split",
                    )
                )
            elif name == "val":
                problems.append(
                    Problem(
                        "warning",
                        "There is no val split (val_fraction is 0): validation metrics "
                        "and early stopping will not be available.",
                        "no_val_split",
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
                        "split_missing_class",
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
            Problem(
                "warning",
                f"{len(pairs)} pair(s) of identical images{labels}: {shown}{more}; remove the copies.",
                "duplicate",
                tuple(str(b.path) for _, b in pairs),
            )
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
                "leakage",
                tuple(str(b.path) for _, b in leaks),
            )
        )
    return problems
