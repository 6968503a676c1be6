"""The one way a run's dataset is prepared: by a centralized run, a federation's sites and its server.

Check every image as training will decode it (or reuse the check kept in ``cache_dir`` while the data is
unchanged), refuse a dataset that cannot be trained on, and, for a site of a one-machine federation, keep only
its share of the train split.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig
from core.data.cache import cached
from core.data.splits import stratified_split
from core.data.summary import PreparedDataset
from core.data.validation import Progress, check_data, require_trainable


@dataclass(frozen=True)
class DataShare:
    """One site's share of a dataset split among ``count`` sites by ``scheme`` (``iid`` or ``label-skew``)."""

    scheme: str
    index: int
    count: int


def prepare_dataset(
    config: RunConfig,
    *,
    cache_dir: Path | None = None,
    share: DataShare | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> PreparedDataset:
    """The checked, trainable dataset ``config`` names.

    Parameters
    ----------
    config
        The data source, split fractions, seed and ``max_bad_fraction``.
    cache_dir
        Keep the check (and a share) here and reuse it while the data is unchanged; None checks every time.
    share
        Keep only this site's share of the train split (its own validation split cut from it; no test split).
    progress, cancel
        As for :func:`core.data.validation.check_data` (an uncached check only).

    Raises
    ------
    core.errors.DataError
        With every problem that blocks training, naming the file or folder (a refused dataset is never cached).
    """
    whole = cached(
        config, cache_dir, "dataset", {}, lambda: require_trainable(check_data(config, progress=progress, cancel=cancel))
    )
    if share is None:
        return whole

    def cut() -> PreparedDataset:
        from core.data.partitions import partition_samples  # flwr-datasets: only when a share is cut

        shards = partition_samples(whole.train, share.count, share.scheme, seed=config.seed)
        train, val, _ = stratified_split(shards[share.index], config.val_fraction, 0.0, config.seed)
        return dataclasses.replace(whole, train=train, val=val, test=[])

    key = {"partition": share.scheme, "id": share.index, "of": share.count}
    return cached(config, cache_dir, "partition", key, cut)
