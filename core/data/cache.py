"""A checked dataset kept on disk, reused while the data is unchanged (see :func:`core.data.prepare.prepare_dataset`).

Flower starts a fresh ClientApp process every round, and checking a site's images (decode and hash every file)
costs far more than a round's training on a real dataset. The first check writes its result into a cache folder
(a site node's, the server's); later ones reuse it while the data folder (file count, sizes, modification times)
is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.data.discovery import Problem, Sample
from core.data.summary import DatasetSummary, PreparedDataset

log = logging.getLogger(__name__)
_KEY_FIELDS = (
    "data_path",
    "data_kind",
    "csv_image_column",
    "csv_label_column",
    "csv_image_root",
    "val_fraction",
    "test_fraction",
    "seed",
    "max_bad_fraction",
)  # not image_size: whether a file decodes does not depend on the size it is resized to
_CACHE_FORMAT = 2  # bump when the cached summary changes shape


def cached(
    config: RunConfig,
    cache_dir: Path | None,
    kind: str,
    extra: dict[str, Any],
    make: Callable[[], PreparedDataset],
) -> PreparedDataset:
    """``make()``, or its result kept in ``cache_dir`` under ``kind`` and ``extra`` while the data is unchanged.

    The key is the data settings that change what the check finds (not image_size: whether a file decodes does not
    depend on the size it is resized to); the data's signature (file count, sizes, newest time) must match too.
    """
    if cache_dir is None:
        return make()
    settings = {name: getattr(config, name) for name in _KEY_FIELDS} | {"format": _CACHE_FORMAT} | extra
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{kind}-{key}.json"
    signature = data_signature(config)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["signature"] == signature:
            return _from_json(cached)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data = make()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # two sites may check at once
        tmp.write_text(json.dumps(_to_json(data, signature)), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:  # a cache that cannot be written only costs time
        log.warning("cannot keep the validated dataset in %s: %s", cache_dir, exc)
    return data


def data_signature(config: RunConfig) -> list[int]:
    """File count, total size and newest modification time under the data (and CSV image root)."""
    count = size = newest = 0
    roots = [Path(config.data_path).expanduser()]
    if config.csv_image_root:
        roots.append(Path(config.csv_image_root).expanduser())
    for root in roots:
        if root.is_file():
            stat = root.stat()
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
            continue
        for folder, _dirs, files in os.walk(root):
            for name in files:
                try:
                    stat = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return [count, size, newest]


def _to_json(data: PreparedDataset, signature: list[int]) -> dict[str, Any]:
    def samples(items: list[Sample]) -> list[list[Any]]:
        return [[str(s.path), s.label, s.split] for s in items]

    return {
        "signature": signature,
        "summary": dataclasses.asdict(data.summary),
        "train": samples(data.train),
        "val": samples(data.val),
        "test": samples(data.test),
    }


def _from_json(cached: dict[str, Any]) -> PreparedDataset:
    summary = dict(cached["summary"])
    summary["problems"] = [Problem(**(p | {"paths": tuple(p.get("paths", ()))})) for p in summary.get("problems", [])]
    summary["image_sizes"] = {k: tuple(v) for k, v in summary.get("image_sizes", {}).items()}

    def samples(rows: list[list[Any]]) -> list[Sample]:
        return [Sample(Path(path), int(label), split) for path, label, split in rows]

    return PreparedDataset(
        summary=DatasetSummary(**summary),
        train=samples(cached["train"]),
        val=samples(cached["val"]),
        test=samples(cached["test"]),
    )
