"""Deterministic, label-stratified train/val/test splits, and filling in the splits a source lacks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from core.data.discovery import CLASS_NAMES, Problem, Sample

# The public Kaggle set ships a val folder of 16 images; below this many per class a val split is too noisy to use.
MIN_VAL_PER_CLASS = 10


def stratified_split(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split samples into train, val and test with the same class mix in each.

    Each class is sorted by path, shuffled with a seeded :func:`numpy.random.default_rng`, then cut, so the result
    depends only on the set of samples and ``seed``. A class with at least 3 samples puts at least one in every
    split whose fraction is above 0.

    Parameters
    ----------
    samples
        Labelled samples; their ``split`` is replaced by the split they land in.
    val_fraction, test_fraction
        Share of each class for val and test, each in ``[0, 1)``.
    seed
        Seed of the shuffle.

    Returns
    -------
    tuple of list
        ``(train, val, test)``, each sorted by path.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label in sorted({s.label for s in samples}):
        members = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        order = rng.permutation(len(members))
        n_val, n_test = _cut_sizes(len(members), val_fraction, test_fraction)
        for rank, index in enumerate(order):
            split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            parts[split].append(dataclasses.replace(members[index], split=split))
    train, val, test = (sorted(parts[name], key=lambda s: str(s.path)) for name in ("train", "val", "test"))
    return train, val, test


def _cut_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val = math.floor(n * val_fraction + 0.5)
    n_test = math.floor(n * test_fraction + 0.5)
    if n >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    # Training always keeps at least one sample of the class; val gives way before test.
    while n_val + n_test > max(n - 1, 0):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def assign_splits(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample], list[Problem]]:
    """Use the splits a source gives and fill in the missing ones from train.

    Samples without a split go to train when the source has splits, or are split three ways when it has none.
    A val split with fewer than :data:`MIN_VAL_PER_CLASS` images of some class is merged back into train and
    re-drawn (with a warning).

    Returns
    -------
    tuple
        ``(train, val, test, problems)``.
    """
    problems: list[Problem] = []
    given = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    if not any(given.values()):
        return (*stratified_split(samples, val_fraction, test_fraction, seed), problems)
    train = given["train"] + [dataclasses.replace(s, split="train") for s in samples if s.split is None]
    val, test = given["val"], given["test"]
    if val and val_fraction > 0:
        counts = [sum(s.label == label for s in val) for label in range(len(CLASS_NAMES))]
        if min(counts) < MIN_VAL_PER_CLASS:
            shown = ", ".join(f"{n} {name}" for n, name in zip(counts, CLASS_NAMES, strict=True))
            problems.append(
                Problem(
                    "warning",
                    f"The val split has only {shown} images (fewer than "
                    f"{MIN_VAL_PER_CLASS} per class); it was merged into train and a "
                    f"{val_fraction:.0%} val split was drawn from train instead.",
                )
            )
            train = train + [dataclasses.replace(s, split="train") for s in val]
            val = []
    draw_val = val_fraction if not val else 0.0
    draw_test = test_fraction if not test else 0.0
    if draw_val > 0 or draw_test > 0:
        train, new_val, new_test = stratified_split(train, draw_val, draw_test, seed)
        val = val or new_val
        test = test or new_test
    return (*(sorted(part, key=lambda s: str(s.path)) for part in (train, val, test)), problems)
