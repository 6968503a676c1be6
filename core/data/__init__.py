"""Dataset discovery, validation, splits, transforms and the demo dataset.

The work lives in the submodules; this face re-exports what training and the desktop use.
"""

from core.data.dataset import XrayDataset, build_transforms
from core.data.demo import ensure_demo_dataset
from core.data.discovery import CLASS_NAMES, DataSource, Problem, Sample, discover
from core.data.images import IMAGE_EXTENSIONS, load_image
from core.data.splits import stratified_split
from core.data.validation import DatasetSummary, PreparedDataset, inspect_dataset, prepare_dataset

__all__ = [
    "CLASS_NAMES",
    "IMAGE_EXTENSIONS",
    "DataSource",
    "DatasetSummary",
    "PreparedDataset",
    "Problem",
    "Sample",
    "XrayDataset",
    "build_transforms",
    "discover",
    "ensure_demo_dataset",
    "inspect_dataset",
    "load_image",
    "prepare_dataset",
    "stratified_split",
]
