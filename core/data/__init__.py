"""Dataset discovery, validation, splits, transforms and the demo dataset.

The work lives in the submodules; this face re-exports what training and the desktop use. The torch Dataset
and transforms load on first use, so checking a dataset (``pneumofl data check``) never waits for torch.
"""

from typing import TYPE_CHECKING, Any

from core.data.demo import ensure_demo_dataset
from core.data.discovery import CLASS_NAMES, DataSource, Problem, Sample, discover
from core.data.images import IMAGE_EXTENSIONS, load_image
from core.data.splits import stratified_split
from core.data.summary import DatasetSummary, PreparedDataset
from core.data.validation import check_data, inspect_dataset, inspect_trainable, require_trainable

if TYPE_CHECKING:
    from core.data.dataset import XrayDataset, build_transforms
    from core.data.prepare import DataShare, prepare_dataset

# The torch Dataset loads on first use; prepare_dataset too (it imports core.data back, for its cache).
_LAZY = {
    "XrayDataset": "core.data.dataset",
    "build_transforms": "core.data.dataset",
    "prepare_dataset": "core.data.prepare",
    "DataShare": "core.data.prepare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'core.data' has no attribute {name!r}")


__all__ = [
    "CLASS_NAMES",
    "IMAGE_EXTENSIONS",
    "DataShare",
    "DataSource",
    "DatasetSummary",
    "PreparedDataset",
    "Problem",
    "Sample",
    "XrayDataset",
    "build_transforms",
    "check_data",
    "discover",
    "ensure_demo_dataset",
    "inspect_dataset",
    "inspect_trainable",
    "load_image",
    "prepare_dataset",
    "require_trainable",
    "stratified_split",
]
