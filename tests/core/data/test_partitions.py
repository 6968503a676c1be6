from pathlib import Path

import pytest

from core.data import Sample
from core.data.partitions import partition_samples
from core.errors import DataError

SAMPLES = [Sample(Path(f"/x/{i}.png"), int(i % 3 != 0), None) for i in range(300)]  # 1:2 like the demo


def paths(partitions):
    return [[s.path for s in part] for part in partitions]


@pytest.mark.parametrize("scheme", ["iid", "label-skew"])
def test_partitions_are_disjoint_complete_and_seeded(scheme):
    parts = partition_samples(SAMPLES, 3, scheme, seed=7)
    flat = [p for part in paths(parts) for p in part]
    assert len(flat) == len(set(flat)) == len(SAMPLES)
    assert all(len(part) >= 4 for part in parts)
    assert paths(partition_samples(SAMPLES, 3, scheme, seed=7)) == paths(parts)
    assert paths(partition_samples(SAMPLES, 3, scheme, seed=8)) != paths(parts)


def test_iid_sites_look_like_the_whole_and_label_skew_does_not():
    def positive_share(part):
        return sum(s.label for s in part) / len(part)

    iid = partition_samples(SAMPLES, 3, "iid", seed=1)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    assert all(abs(positive_share(p) - 2 / 3) < 0.15 for p in iid)
    skewed = partition_samples(SAMPLES, 3, "label-skew", seed=1, alpha=0.3)
    assert max(abs(positive_share(p) - 2 / 3) for p in skewed) > 0.15


def test_bad_requests_are_sentences():
    with pytest.raises(DataError, match="Unknown partition scheme 'random'"):
        partition_samples(SAMPLES, 3, "random")
    with pytest.raises(DataError, match="at least 2 sites"):
        partition_samples(SAMPLES, 1)
    with pytest.raises(DataError, match="too few for 100 sites"):
        partition_samples(SAMPLES, 100)
