"""Dataset check throughput: `data check` (check_files, threaded) vs a plain single-threaded decode loop.

The data: ``--pngs`` generated 8-bit PNGs plus ``--dicoms`` 16-bit DICOMs (12 bits stored), ``--size`` pixels
square, of X-ray-like content (smooth anatomy-like shapes plus noise, so they compress like real radiographs),
half in NORMAL/ and half in PNEUMONIA/. Half the DICOMs are uncompressed (Explicit VR Little Endian); the rest
are spread over RLE, JPEG 2000 lossless, JPEG-LS lossless, JPEG lossless and 12-bit JPEG extended. Generation
(a process pool) is not timed, but reported.

Every file is read once before timing, so both sides read from a warm page cache alike (no cache dropping).
Baseline: ``for s in samples: load_resized(s.path, image_size)`` (training's decode, one file at a time).
Measured: ``check_files(samples, image_size)`` (threaded; it also hashes every byte). With ``--repeats`` > 1
the order alternates (baseline first on odd repeats) and the medians are reported. The full
``inspect_dataset`` (discovery, splitting, duplicate detection) is timed once.

Usage: .venv/bin/python tests/bench/data_check.py [--pngs 2000] [--dicoms 200] [--size 1024] [--image-size 224]
       [--workdir DIR] [--keep] [--repeats 1]
Last line: JSON {"files", "pngs", "dicoms", "size", "image_size", "baseline_images_per_s", "check_images_per_s",
"inspect_images_per_s", "ratio", "cpu_count", "workers"}; ratio = check / baseline.
Target: ratio >= 1.5 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from PIL import Image

from core.data.discovery import CLASS_NAMES, DataSource, Sample
from core.data.file_check import check_files
from core.data.images import load_resized
from core.data.validation import inspect_dataset

UNCOMPRESSED = "explicit_le"
COMPRESSED = ("rle", "j2k_lossless", "jpeg_ls", "jpeg_lossless", "jpeg_extended")
MARKER = "bench-data-check.json"


def xray_like(rng: np.random.Generator, size: int, pneumonia: bool) -> np.ndarray:
    """A chest-radiograph-like image in [0, 1]: body, dark lungs, ribs, spine, heart, optional opacity, noise.

    The smooth anatomy is drawn at a quarter of the size and upsampled; texture and noise are full size.
    """
    low = max(64, size // 4)
    y, x = np.mgrid[-1.0 : 1.0 : low * 1j, -1.0 : 1.0 : low * 1j]
    jitter = rng.uniform(-0.05, 0.05, 8)

    def soft(d: np.ndarray, width: float) -> np.ndarray:
        """1 inside the unit level set of ``d``, 0 outside, with a smooth edge."""
        return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / width, -50.0, 50.0)))

    image = np.full((low, low), 0.04)
    body = soft(((x - jitter[0]) / 0.92) ** 2 + ((y - 0.1) / 1.05) ** 2, 0.04)
    image += 0.50 * body
    for side in (-1.0, 1.0):
        cx, cy = side * (0.40 + jitter[1]), -0.05 + jitter[2]
        lung = soft(((x - cx) / (0.30 + jitter[3])) ** 2 + ((y - cy) / (0.62 + jitter[4])) ** 2, 0.08)
        image -= 0.28 * lung
        # Ribs: curved bands across each lung, brighter than the air around them.
        phase = (y + 0.35 * (x - cx) ** 2) * (9.0 + jitter[5] * 10) * np.pi
        image += 0.07 * lung * np.clip(np.sin(phase), 0.0, None) ** 2
    image += 0.22 * np.exp(-(((x - jitter[6]) / 0.09) ** 2)) * body  # spine and mediastinum
    image += 0.18 * soft(((x + 0.12) / 0.28) ** 2 + ((y - 0.30) / 0.26) ** 2, 0.15)  # heart
    image += 0.10 * soft((x / 0.5) ** 2 + ((y + 0.95) / 0.18) ** 2, 0.15)  # shoulders / clavicles
    if pneumonia:
        cx = rng.choice((-1.0, 1.0)) * rng.uniform(0.3, 0.5)
        cy = rng.uniform(-0.3, 0.3)
        radius = rng.uniform(0.10, 0.22)
        image += 0.22 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    full = np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC))
    # Lung markings and soft-tissue texture: coarse random detail, smoothly upsampled.
    texture = rng.normal(0.0, 0.012, (64, 64)).astype(np.float32)
    full = full + np.asarray(Image.fromarray(texture).resize((size, size), Image.Resampling.BICUBIC))
    full = full + rng.normal(0.0, 0.012, (size, size))  # quantum noise, a few grey levels at 8 bits
    return np.clip(full, 0.0, 1.0)


def _make(task: tuple[str, str, int, int, str]) -> tuple[str, float]:
    """Write one file (``kind`` "png" or a DICOM syntax name); returns its path and seconds taken."""
    path, kind, size, seed, label = task
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    image = xray_like(rng, size, label == "PNEUMONIA")
    if kind == "png":
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    else:
        from tests.core.dicom_factory import dataset, save

        save(dataset(np.round(image * 4095).astype(np.int64), bits=12), Path(path), kind)
    return path, time.perf_counter() - started


def plan(root: Path, pngs: int, dicoms: int, size: int) -> list[tuple[str, str, int, int, str]]:
    """Every file to generate: (path, kind, size, seed, label folder), labels alternating."""
    tasks = []
    for i in range(pngs):
        label = CLASS_NAMES[i % 2]
        tasks.append((str(root / label / f"png_{i:05d}.png"), "png", size, i, label))
    uncompressed = dicoms // 2
    for i in range(dicoms):
        label = CLASS_NAMES[i % 2]
        syntax = UNCOMPRESSED if i < uncompressed else COMPRESSED[(i - uncompressed) % len(COMPRESSED)]
        tasks.append((str(root / label / f"dcm_{i:05d}_{syntax}.dcm"), syntax, size, 1_000_000 + i, label))
    return tasks


def generate(root: Path, tasks: list[tuple[str, str, int, int, str]], params: dict) -> float:
    """Generate the files into ``root`` with a process pool (reused when a previous run left the same set)."""
    marker = root / MARKER
    if marker.exists():
        if json.loads(marker.read_text()) == {**params, "complete": True}:
            print(f"reusing the data already generated in {root}", flush=True)
            return 0.0
        remove_data(root)  # ours, but other options or unfinished
    elif any((root / name).exists() for name in CLASS_NAMES):
        sys.exit(f"{root} already holds NORMAL/ or PNEUMONIA/ not made by this benchmark: choose another --workdir")
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**params, "complete": False}))
    for name in CLASS_NAMES:
        (root / name).mkdir()
    processes = os.cpu_count() or 1
    print(f"generating {len(tasks)} files in {root} with {processes} processes...", flush=True)
    started = time.perf_counter()
    with multiprocessing.Pool(processes) as pool:
        for done, _ in enumerate(pool.imap_unordered(_make, tasks, chunksize=4), 1):
            if done % 200 == 0 or done == len(tasks):
                print(f"  {done}/{len(tasks)} ({time.perf_counter() - started:.1f} s)", flush=True)
    elapsed = time.perf_counter() - started
    marker.write_text(json.dumps({**params, "complete": True}))
    return elapsed


def remove_data(root: Path) -> None:
    """Remove what this benchmark generated in ``root`` (only when its marker file says it made it)."""
    if (root / MARKER).exists():
        for name in CLASS_NAMES:
            shutil.rmtree(root / name, ignore_errors=True)
        (root / MARKER).unlink()


def warm(samples: list[Sample], image_size: int) -> tuple[int, float]:
    """Read every file once (page cache) and decode one file of each kind (imports, plugin registration)."""
    started = time.perf_counter()
    total = sum(len(s.path.read_bytes()) for s in samples)
    elapsed = time.perf_counter() - started
    first_of_kind: dict[str, Sample] = {}
    for s in samples:
        first_of_kind.setdefault(s.path.stem.split("_", 2)[-1] if s.path.suffix == ".dcm" else "png", s)
    for s in first_of_kind.values():
        load_resized(s.path, image_size)
    return total, elapsed


def time_baseline(samples: list[Sample], image_size: int) -> float:
    started = time.perf_counter()
    for s in samples:
        load_resized(s.path, image_size)
    return time.perf_counter() - started


def time_check(samples: list[Sample], image_size: int) -> float:
    started = time.perf_counter()
    reports = check_files(samples, image_size)
    elapsed = time.perf_counter() - started
    bad = [r for r in reports if not r.ok]
    assert not bad, f"{len(bad)} files failed the check, first: {bad[0].problem}"
    return elapsed


def run(root: Path, args: argparse.Namespace) -> dict:
    params = {"pngs": args.pngs, "dicoms": args.dicoms, "size": args.size}
    tasks = plan(root, args.pngs, args.dicoms, args.size)
    generation = generate(root, tasks, params)
    samples = [Sample(Path(path), CLASS_NAMES.index(label), None) for path, _, _, _, label in tasks]
    n = len(samples)
    kinds = Counter(kind for _, kind, _, _, _ in tasks)
    print(f"generation: {generation:.1f} s (not timed below); files by kind: {dict(kinds)}", flush=True)

    total_bytes, read_s = warm(samples, args.image_size)
    print(
        f"warm cache: read all {n} files once ({total_bytes / 2**20:.1f} MiB, {read_s:.2f} s) before timing, "
        "so both measurements read from memory alike (the OS page cache is not dropped)",
        flush=True,
    )
    cpu_count = os.cpu_count() or 1
    workers = min(8, cpu_count)  # check_files' default
    baseline_times: list[float] = []
    check_times: list[float] = []
    for repeat in range(1, args.repeats + 1):
        order = ("baseline", "check") if repeat % 2 == 1 else ("check", "baseline")
        for side in order:
            if side == "baseline":
                baseline_times.append(time_baseline(samples, args.image_size))
            else:
                check_times.append(time_check(samples, args.image_size))
        print(
            f"repeat {repeat} ({' then '.join(order)}): baseline loop {baseline_times[-1]:.2f} s "
            f"({n / baseline_times[-1]:.1f} images/s), check_files {check_times[-1]:.2f} s "
            f"({n / check_times[-1]:.1f} images/s, {workers} threads)",
            flush=True,
        )

    started = time.perf_counter()
    prepared = inspect_dataset(DataSource(root), image_size=args.image_size)
    inspect_s = time.perf_counter() - started
    summary = prepared.summary
    checked = sum(summary.class_counts.values())
    assert summary.ok and checked == n, f"inspect_dataset found {checked} of {n} usable: {summary.problems[:3]}"
    print(
        f"inspect_dataset (discovery, check, splits, duplicates): {inspect_s:.2f} s ({n / inspect_s:.1f} images/s); "
        f"{len(summary.problems)} problems; file types: {summary.file_types}",
        flush=True,
    )

    baseline, check = statistics.median(baseline_times), statistics.median(check_times)
    print(f"ratio check/baseline: {baseline / check:.2f} on {cpu_count} cores (target >= 1.5 on 2 cores)")
    return {
        "files": n,
        "pngs": args.pngs,
        "dicoms": args.dicoms,
        "size": args.size,
        "image_size": args.image_size,
        "baseline_images_per_s": round(n / baseline, 1),
        "check_images_per_s": round(n / check, 1),
        "inspect_images_per_s": round(n / inspect_s, 1),
        "ratio": round(baseline / check, 3),
        "cpu_count": cpu_count,
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pngs", type=int, default=2000)
    parser.add_argument("--dicoms", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024, help="side of the generated images, pixels")
    parser.add_argument("--image-size", type=int, default=224, help="side training resizes to")
    parser.add_argument("--workdir", type=Path, help="where to generate the data (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated data (a later run with the same --workdir reuses it)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.pngs + args.dicoms < 2 or args.repeats < 1:
        parser.error("need at least 2 files (one per class) and 1 repeat")
    temporary = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="pneumofl-bench-")) if temporary else args.workdir.resolve()
    try:
        summary = run(root, args)
    finally:
        if args.keep:
            print(f"kept the data in {root}", flush=True)
        elif temporary:
            shutil.rmtree(root, ignore_errors=True)
        else:
            remove_data(root)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
