"""The torch Dataset of X-ray samples, with an in-memory cache of resized images, and its transforms.

A file that becomes unreadable after the dataset check (deleted, replaced, truncated on a network share) does
not kill the run: its sample is dropped from the batch, and the batch names it in ``Batch.skipped`` so that the
training process (not a dataloader worker) can record it and judge how much data is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from core.data.discovery import Sample
from core.data.images import NORMALISE_MEAN as MEAN
from core.data.images import NORMALISE_STD as STD
from core.data.images import load_resized
from core.errors import DataError


def build_transforms(image_size: int, train: bool) -> v2.Compose:
    """Build the pipeline from an 8-bit grayscale image to a normalised 3-channel float tensor.

    Parameters
    ----------
    image_size
        Output side length S.
    train
        Add mild augmentation: a small rotation/shift/scale and a resized crop keeping 85-100 % of the area.
        No horizontal flip: the heart is on the left, and a flipped chest is not a real chest X-ray.

    Returns
    -------
    torchvision.transforms.v2.Compose
        Maps a ``uint8`` ``(H, W)`` array or tensor to a ``float32`` ``(3, S, S)`` tensor,
        normalised with mean 0.5 and std 0.25 (so values lie in [-2, 2]).
    """
    steps: list[Any] = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if train:
        steps += [
            v2.RandomAffine(degrees=7, translate=(0.04, 0.04), scale=(0.95, 1.05)),
            v2.RandomResizedCrop(image_size, scale=(0.85, 1.0), ratio=(0.9, 1.1), antialias=True),
        ]
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.RGB(),  # ImageNet backbones expect 3 channels; the gray channel is repeated
        v2.Normalize(mean=[MEAN] * 3, std=[STD] * 3),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


class Batch(NamedTuple):
    """What a dataloader yields: images ``(N, 3, S, S)``, labels ``(N,)``, and the files skipped from it.

    ``skipped`` holds ``(path, reason)`` for each sample of the batch whose file could not be read; N counts
    only the samples that could.
    """

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[tuple[str, str]]


class Unreadable(NamedTuple):
    """Stands in for a sample whose file could not be read, until :func:`collate` drops it."""

    path: str
    reason: str


def collate(items: list[Any]) -> Batch:
    """Stack the readable samples of a batch and list the unreadable ones (see :class:`Batch`)."""
    skipped = [(item.path, item.reason) for item in items if isinstance(item, Unreadable)]
    good = [item for item in items if not isinstance(item, Unreadable)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0), skipped)
    images, labels = default_collate(good)
    return Batch(images, labels, skipped)


class XrayDataset(Dataset[Any]):
    """Samples as ``(image, label)`` pairs: a float ``(3, S, S)`` tensor and a float scalar (1.0 = PNEUMONIA).

    A sample whose file cannot be read comes back as :class:`Unreadable`; batch with :func:`collate`.

    Parameters
    ----------
    samples
        The samples of one split.
    image_size
        Side length S of the square output.
    train
        Use the augmenting transforms.
    cache
        Keep each image decoded and resized to S x S (``uint8``, S*S bytes) in memory after its first load, so
        later epochs skip decoding. With ``num_workers > 0`` each worker holds its own cache, which only lasts
        across epochs with ``persistent_workers=True``.

    """

    def __init__(self, samples: Sequence[Sample], image_size: int, train: bool, cache: bool = True) -> None:
        self.samples = list(samples)
        self.image_size = image_size
        self.train = train
        self.cache = cache
        self.transform = build_transforms(image_size, train)
        self._cache: list[np.ndarray | None] = [None] * len(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | Unreadable:
        sample = self.samples[index]
        image = self._cache[index]
        if image is None:
            try:
                image = load_resized(sample.path, self.image_size)
            except DataError as exc:
                return Unreadable(str(sample.path), str(exc))
            if self.cache:
                self._cache[index] = image
        return self.transform(image), torch.tensor(float(sample.label), dtype=torch.float32)

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order (for class weights and samplers)."""
        return [s.label for s in self.samples]
