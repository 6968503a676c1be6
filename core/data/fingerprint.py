"""What a run was trained on, coarsely, and whether an image to read looks like it.

A model answers with the same confidence on an image it never learned from: a lateral view, a child on an
adult-trained model, a CT scout. Every run records a fingerprint of its training images (counts by modality, view,
body part, manufacturer and age band, image sizes, and a histogram of mean intensities; never a file name or a
patient), and each image read is checked against it. A field the training images or the image do not carry (PNG
folders carry none) is "unknown" and never warns. The warnings never change the probability.
"""

from __future__ import annotations

import io
import random
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import DICOM_EXTENSION, decode_image
from core.errors import DataError

UNKNOWN = "unknown"
FIELDS = ("modality", "view", "body_part", "manufacturer", "age_band")
XRAY_MODALITIES = frozenset({"CR", "DX", "DR"})
FRONTAL, LATERAL = frozenset({"PA", "AP"}), frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})
AGE_BANDS = ((0, 2, "infant"), (2, 18, "child"), (18, 65, "adult"), (65, 200, "older adult"))
INTENSITY_SAMPLE = 200  # images decoded for the intensity histogram: enough for its range, cheap on any dataset
INTENSITY_BINS = 16
MEAN_SIZE = 64  # px: an image's mean intensity is measured at this size (as reading measures it)
INTENSITY_MARGIN = 20.0  # grey levels beyond the training range before an image's mean intensity warns
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")


def _age_band(age: str) -> str:
    """The band of a DICOM Age String (``045Y``, ``006M``), or unknown."""
    found = _AGE.match(age.strip().upper())
    if not found:
        return UNKNOWN
    years = int(found.group(1)) / {"D": 365.0, "W": 52.0, "M": 12.0, "Y": 1.0}[found.group(2)]
    return next((band for low, high, band in AGE_BANDS if low <= years < high), UNKNOWN)


def image_facts(path: Path, data: bytes | None = None) -> dict[str, str]:
    """Modality, view, body part, manufacturer and age band from a DICOM header; unknown for other files.

    ``data``: the file's bytes, when the caller has them already (reading does), so the file is not read twice.
    """
    facts = dict.fromkeys(FIELDS, UNKNOWN)
    if path.suffix.lower() != DICOM_EXTENSION:
        return facts
    from pydicom import dcmread

    try:
        header = dcmread(io.BytesIO(data) if data is not None else path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - an unreadable header tells nothing; decoding reports the file itself
        return facts
    for field, keyword in (
        ("modality", "Modality"),
        ("view", "ViewPosition"),
        ("body_part", "BodyPartExamined"),
        ("manufacturer", "Manufacturer"),
    ):
        value = str(header.get(keyword, "") or "").strip().upper()
        facts[field] = value or UNKNOWN
    facts["age_band"] = _age_band(str(header.get("PatientAge", "") or ""))
    return facts


def data_fingerprint(paths: Sequence[Path], *, seed: int = 0) -> dict[str, Any]:
    """The fingerprint of training images ``paths`` (counts, sizes, mean-intensity histogram).

    Headers are read for every image; pixels for at most :data:`INTENSITY_SAMPLE` of them, chosen with ``seed``.
    """
    counts = {field: Counter() for field in FIELDS}
    for path in paths:
        for field, value in image_facts(path).items():
            counts[field][value] += 1
    sample = random.Random(seed).sample(list(paths), min(INTENSITY_SAMPLE, len(paths)))
    means, widths, heights = [], [], []
    for path in sample:
        try:
            decoded = decode_image(path, size=MEAN_SIZE)
        except DataError:
            continue
        heights.append(decoded.height)
        widths.append(decoded.width)
        means.append(float(np.mean(decoded.pixels)))
    histogram = np.histogram(means, bins=INTENSITY_BINS, range=(0, 255))[0].tolist() if means else []
    return {
        "images": len(paths),
        "counts": {field: dict(counts[field].most_common()) for field in FIELDS},
        "sizes": {
            "width": [min(widths), int(statistics.median(widths)), max(widths)] if widths else [],
            "height": [min(heights), int(statistics.median(heights)), max(heights)] if heights else [],
        },
        "intensity": {
            "histogram": histogram,
            "range": [round(float(np.percentile(means, 1)), 1), round(float(np.percentile(means, 99)), 1)]
            if means
            else [],
        },
    }


MAX_VALUES = 64  # distinct values a received fingerprint may list per field (a hostile site sends no novel)
MAX_TEXT = 64


def checked_fingerprint(received: Any) -> dict[str, Any] | None:
    """A fingerprint a site sent, rebuilt from its counts only, or None when it is not one.

    Only its coarse parts are kept (counts by field, image count, the intensity histogram and range, size
    bounds); values are bounded in number and length, so a site cannot make the server store what it likes.
    """
    try:
        images = int(received["images"])
        counts = {
            field: {str(value)[:MAX_TEXT]: int(n) for value, n in list(received["counts"][field].items())[:MAX_VALUES]}
            for field in FIELDS
        }
        histogram = [int(n) for n in received["intensity"]["histogram"]]
        low_high = [float(v) for v in received["intensity"]["range"]]
        sizes = {k: [int(v) for v in received["sizes"][k]] for k in ("width", "height")}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    numbers = [images, *histogram, *(n for c in counts.values() for n in c.values())]
    if any(n < 0 for n in numbers) or len(histogram) not in (0, INTENSITY_BINS) or len(low_high) not in (0, 2):
        return None
    if any(len(v) not in (0, 3) for v in sizes.values()) or not all(np.isfinite(low_high)):
        return None
    return {
        "images": images,
        "counts": counts,
        "sizes": sizes,
        "intensity": {"histogram": histogram, "range": low_high},
    }


def merge_fingerprints(fingerprints: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The fingerprint of a federation: the sum of its sites' counts, by site name.

    Counts and the intensity histogram add up; sizes keep the smallest and largest (and the median of the sites'
    medians); the intensity range spans every site's. ``sites`` lists who contributed.
    """
    counts = {field: Counter() for field in FIELDS}
    histogram = np.zeros(INTENSITY_BINS, dtype=np.int64)
    widths, heights, lows, highs = [], [], [], []
    for fingerprint in fingerprints.values():
        for field in FIELDS:
            counts[field].update(fingerprint["counts"].get(field, {}))
        if fingerprint["intensity"]["histogram"]:
            histogram += np.asarray(fingerprint["intensity"]["histogram"], dtype=np.int64)
        if fingerprint["intensity"]["range"]:
            lows.append(fingerprint["intensity"]["range"][0])
            highs.append(fingerprint["intensity"]["range"][1])
        if fingerprint["sizes"]["width"]:
            widths.append(fingerprint["sizes"]["width"])
            heights.append(fingerprint["sizes"]["height"])

    def bounds(triples: list[list[int]]) -> list[int]:
        if not triples:
            return []
        return [min(t[0] for t in triples), int(statistics.median(t[1] for t in triples)), max(t[2] for t in triples)]

    return {
        "images": sum(int(f["images"]) for f in fingerprints.values()),
        "counts": {field: dict(counts[field].most_common()) for field in FIELDS},
        "sizes": {"width": bounds(widths), "height": bounds(heights)},
        "intensity": {
            "histogram": histogram.tolist() if lows else [],
            "range": [min(lows), max(highs)] if lows else [],
        },
        "sites": sorted(fingerprints),
    }


def _known(counts: Mapping[str, int]) -> set[str]:
    return {value for value, n in counts.items() if value != UNKNOWN and n > 0}


def image_warnings(facts: Mapping[str, str], mean_intensity: float | None, fingerprint: Mapping[str, Any]) -> list[str]:
    """Sentences saying how an image differs from the training images (empty when nothing is known to differ)."""
    counts = fingerprint.get("counts") or {}
    warnings = []
    trained_views = _known(counts.get("view", {}))
    if facts.get("view") in LATERAL and trained_views and trained_views <= FRONTAL:
        warnings.append(f"lateral view ({facts['view']}); the model was trained on frontal views only")
    trained_ages = _known(counts.get("age_band", {}))
    age = facts.get("age_band", UNKNOWN)
    if age != UNKNOWN and trained_ages and age not in trained_ages:
        warnings.append(f"patient is {age}; the training images were of {', '.join(sorted(trained_ages))} patients")
    modality = facts.get("modality", UNKNOWN)
    if modality != UNKNOWN and modality not in XRAY_MODALITIES:
        warnings.append(f"modality {modality} is not a radiograph (CR, DX, DR)")
    part = facts.get("body_part", UNKNOWN)
    if part != UNKNOWN and "CHEST" not in part and "THORAX" not in part:
        warnings.append(f"body part {part} is not the chest")
    low_high = (fingerprint.get("intensity") or {}).get("range") or []
    if mean_intensity is not None and len(low_high) == 2:
        low, high = low_high
        if not low - INTENSITY_MARGIN <= mean_intensity <= high + INTENSITY_MARGIN:
            warnings.append(f"mean intensity {mean_intensity:.0f} is outside the training images' {low:.0f}-{high:.0f}")
    return warnings


def describe(fingerprint: Mapping[str, Any]) -> list[str]:
    """Lines for ``runs show`` and the model card."""
    counts = fingerprint.get("counts") or {}
    sites = fingerprint.get("sites")
    whose = f", sum of sites {', '.join(sites)}" if sites else ""
    lines = [f"Training data fingerprint ({fingerprint.get('images', 0)} images{whose}):"]
    for field in FIELDS:
        values = ", ".join(f"{value} {n}" for value, n in (counts.get(field) or {}).items()) or UNKNOWN
        lines.append(f"  {field.replace('_', ' ')}: {values}")
    sizes = fingerprint.get("sizes") or {}
    if sizes.get("width"):
        (w0, w1, w2), (h0, h1, h2) = sizes["width"], sizes["height"]
        lines.append(f"  image sizes: min {w0}x{h0}, median {w1}x{h1}, max {w2}x{h2}")
    low_high = (fingerprint.get("intensity") or {}).get("range") or []
    if low_high:
        lines.append(f"  mean intensity (1st-99th percentile): {low_high[0]:.0f}-{low_high[1]:.0f}")
    return lines
