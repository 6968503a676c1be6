"""A site's data and training settings for a round, without Lightning (the benchmark's bare app uses them too).

A site validates its own images once and keeps the result in its node folder (see
:mod:`core.data.cache`); a site of a local federation trains on its share of one dataset's train split.
"""

from __future__ import annotations

from pathlib import Path

from core.config import RunConfig
from core.data import PreparedDataset
from core.data.prepare import DataShare, prepare_dataset
from core.federated.settings import FederationConfig, SiteSettings


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


def site_share(site: SiteSettings) -> DataShare | None:
    """A local-federation site's share of the source's train split (None: the site trains on all its data)."""
    return DataShare(site.partition, site.partition_id, site.num_partitions) if site.partitioned else None


def prepare_site_data(config: RunConfig, site: SiteSettings) -> PreparedDataset:
    """:func:`core.data.prepare.prepare_dataset` for a site: kept in its node folder between rounds, its share.

    Raises
    ------
    core.errors.DataError
        With every problem that blocks training, naming the file or folder.
    """
    return prepare_dataset(
        config, cache_dir=Path(site.cache_dir) if site.cache_dir else None, share=site_share(site)
    )
