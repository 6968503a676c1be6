"""A site's data and training settings for a round, without Lightning (the benchmark's bare app uses them too).

A site validates its own images once and keeps the result in its node folder (see
:mod:`core.federated.site_cache`); a site of a local federation trains on its share of one dataset's train split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.config import RunConfig
from core.data import PreparedDataset
from core.data.splits import stratified_split
from core.federated.settings import FederationConfig, SiteSettings
from core.federated.site_cache import prepare_data_cached, prepare_partition_cached


def site_training_config(plan: FederationConfig, site: SiteSettings) -> RunConfig:
    """The shared training settings with this site's data, local epochs and no early stopping."""
    return plan.training.with_overrides(
        experiment_name=f"{plan.name} · {site.site_name}",
        demo=False,
        data_path=site.data_path,
        epochs=plan.local_epochs,
        early_stopping_patience=0,
        max_threads=site.max_threads or plan.training.max_threads,
    )


def prepare_site_data(config: RunConfig, site: SiteSettings) -> PreparedDataset:
    """Validate the site's data; a local-federation site keeps its partition of the source's train split.

    Both are kept in the node's folder between rounds, so later rounds neither re-check the images nor load
    the partitioning libraries.

    Raises
    ------
    core.errors.DataError
        With every problem that blocks training, naming the file or folder.
    """
    cache = Path(site.cache_dir) if site.cache_dir else None
    if not site.partitioned:
        return prepare_data_cached(config, cache)
    key = {"partition": site.partition, "id": site.partition_id, "of": site.num_partitions}

    def partition() -> PreparedDataset:
        from core.data.partitions import partition_samples  # flwr-datasets: only when a partition is made

        data = prepare_data_cached(config, cache)
        shards = partition_samples(data.train, site.num_partitions, site.partition, seed=config.seed)
        train, val, _ = stratified_split(shards[site.partition_id], config.val_fraction, 0.0, config.seed)
        return dataclasses.replace(data, train=train, val=val, test=[])

    return prepare_partition_cached(config, cache, key, partition)
