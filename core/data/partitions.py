"""Federated partitions of a dataset with flwr-datasets' partitioners: IID shards or label skew (Dirichlet).

Used to give each site of a local federation its own slice of one dataset, so a federation can be tried on one
machine with realistic differences between sites.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.data.discovery import Sample
from core.errors import DataError

SCHEMES = ("iid", "label-skew")


def load_partitioners() -> tuple[type, type, type]:
    """flwr-datasets' IID and Dirichlet partitioners and the ``datasets`` table they cut.

    Heavy (datasets, scipy and seaborn: about 4 s of import), so imported only when a federation is partitioned;
    a local federation calls this early, in a thread, while its nodes start.
    """
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    return Dataset, DirichletPartitioner, IidPartitioner


def partition_samples(
    samples: Sequence[Sample],
    num_partitions: int,
    scheme: str = "iid",
    *,
    seed: int = 42,
    alpha: float = 0.5,
    min_partition_size: int = 4,
) -> list[list[Sample]]:
    """Split ``samples`` into ``num_partitions`` disjoint site datasets.

    Parameters
    ----------
    samples
        The whole dataset.
    num_partitions
        Number of sites (2 or more).
    scheme
        ``iid``: a seeded shuffle cut into equal shards. ``label-skew``: per-class proportions drawn from a
        Dirichlet(``alpha``) distribution (smaller ``alpha``, more skew), each site holding at least
        ``min_partition_size`` images.
    seed
        Same seed, same partitions.

    Raises
    ------
    DataError
        If the scheme is unknown or there are too few images for that many sites.
    """
    Dataset, DirichletPartitioner, IidPartitioner = load_partitioners()
    if scheme not in SCHEMES:
        raise DataError(f"Unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if num_partitions < 2:
        raise DataError("A federation needs at least 2 sites.")
    if len(samples) < num_partitions * min_partition_size:
        raise DataError(
            f"{len(samples)} images are too few for {num_partitions} sites of at least {min_partition_size} images; "
            "use fewer sites or more data."
        )
    table = Dataset.from_dict({"index": list(range(len(samples))), "label": [s.label for s in samples]})
    if scheme == "iid":
        partitioner = IidPartitioner(num_partitions)
        table = table.shuffle(seed=seed)  # IidPartitioner shards contiguously
    else:
        partitioner = DirichletPartitioner(
            num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_partition_size,
            self_balancing=True,
            seed=seed,
        )
    partitioner.dataset = table
    return [[samples[i] for i in partitioner.load_partition(k)["index"]] for k in range(num_partitions)]
