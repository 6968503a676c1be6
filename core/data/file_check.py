"""Reading every image of a dataset once: hash it and decode it exactly as training will, in parallel.

Threads overlap disk reads, and the heavy parts release the GIL (hashing, zlib and JPEG decoding, resizing),
so a thread pool scales on a workstation's cores without copying images between processes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.data.discovery import Sample
from core.data.images import decode_image, read_image_bytes
from core.errors import ImageProblem, RunCancelled

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` from the checking thread."""


@dataclass(frozen=True)
class FileReport:
    """What reading one file found: its facts when usable, else the problem (kind and sentence)."""

    sample: Sample
    digest: str = ""
    width: int = 0
    height: int = 0
    file_type: str = ""
    converted_to_grey: bool = False
    modality: str = ""
    problem_kind: str = ""
    problem: str = ""

    @property
    def ok(self) -> bool:
        """True when the file decoded."""
        return not self.problem_kind


def check_file(sample: Sample, image_size: int) -> FileReport:
    """Read ``sample``'s file once, hash its bytes and decode them through the training path.

    Never raises for a bad file: the report carries the problem.
    """
    digest = ""
    try:
        data = read_image_bytes(Path(sample.path))
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        image = decode_image(sample.path, data, image_size)
    except ImageProblem as problem:
        return FileReport(sample, digest, problem_kind=problem.kind, problem=str(problem))
    return FileReport(
        sample,
        digest,
        image.width,
        image.height,
        image.file_type,
        image.converted_to_grey,
        image.modality,
    )


def check_files(
    samples: list[Sample],
    image_size: int,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    workers: int | None = None,
) -> list[FileReport]:
    """Check every sample's file, in parallel, in the order given.

    Parameters
    ----------
    samples
        The files to check.
    image_size
        The side length training resizes to (the check decodes at that size, as training does).
    progress
        Called after each file with ``(done, total)``.
    cancel
        When set, the check stops within the files already being read.
    workers
        Threads (default: one per core, at most 8).

    Raises
    ------
    core.errors.RunCancelled
        When ``cancel`` was set.
    """
    total = len(samples)
    workers = workers or min(8, os.cpu_count() or 1)
    reports: list[FileReport] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pneumofl-check") as pool:
        for report in _bounded_map(pool, lambda s: check_file(s, image_size), samples, window=workers * 4):
            reports.append(report)
            if progress is not None:
                progress(len(reports), total)
            if cancel is not None and cancel.is_set():
                raise RunCancelled()
    return reports


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Sample], FileReport], items: Iterable[Sample], window: int
) -> Iterator[FileReport]:
    """``pool.map`` with at most ``window`` files in flight, so a cancel stops promptly and memory stays flat."""
    pending: deque[Future[FileReport]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
