"""Site-local normalisation layers (FedBN): which tensors never leave a site, and where a site keeps them.

Normalisation layers are found by module type (every BatchNorm, InstanceNorm, GroupNorm and LayerNorm), not by
parameter name, so any backbone works. With ``local_bn`` a site sends everything else, keeps its own
normalisation tensors in its node folder between rounds (each round is a fresh process) and uses them for its
evaluations and predictions. The server, which never sees them, re-estimates BatchNorm statistics on its
held-out images before it evaluates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def normalisation_keys(model: nn.Module) -> set[str]:
    """State-dict keys (parameters and buffers) of ``model``'s normalisation layers."""
    keys: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            dot = f"{prefix}." if prefix else ""
            keys |= {dot + name for name, _ in module.named_parameters(recurse=False)}
            keys |= {dot + name for name, _ in module.named_buffers(recurse=False)}
    return keys


def normalisation_statistics(model: nn.Module) -> set[str]:
    """State-dict keys of the running statistics (buffers) of ``model``'s BatchNorm layers."""
    keys: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            dot = f"{prefix}." if prefix else ""
            keys |= {dot + name for name, _ in module.named_buffers(recurse=False)}
    return keys


def site_local_keys(model: nn.Module, *, local_bn: bool, statistics: bool) -> set[str]:
    """The tensors of ``model`` that stay at each site.

    With ``local_bn`` (FedBN) every normalisation tensor. With ``statistics`` the BatchNorm running statistics
    only: under differential privacy they summarise the site's images outside the clipped and noised update,
    and a server optimizer (FedAvgM, FedAdam, FedYogi) would step them like weights, with momentum, until a
    variance goes negative. They are not weights: each site keeps its own, and the server re-estimates them on
    its held-out images.
    """
    if local_bn:
        return normalisation_keys(model)
    if statistics:
        return normalisation_statistics(model)
    return set()


def split_state(
    state: Mapping[str, torch.Tensor], local: Iterable[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(shared, local)``: the tensors that travel and the ones that stay at the site."""
    keep = set(local)
    shared = {k: v for k, v in state.items() if k not in keep}
    return shared, {k: v for k, v in state.items() if k in keep}


class LocalLayerStore:
    """A site's own normalisation tensors for one federation, in a file in the node's folder."""

    def __init__(self, folder: Path, flower_run_id: int) -> None:
        self.path = folder / f"local-layers-{flower_run_id}.pt"

    def load(self) -> dict[str, torch.Tensor]:
        """The tensors kept after the site's last round (empty before its first)."""
        if not self.path.is_file():
            return {}
        return dict(torch.load(self.path, map_location="cpu", weights_only=True))

    def save(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keep ``tensors`` for the next round (written to a temporary file, then renamed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, partial)
        partial.replace(self.path)


@torch.no_grad()
def recalibrate_normalisation(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate BatchNorm running statistics from ``batches`` (no labels, no weight changes).

    What a new site does with a FedBN model before using it, and what the server does to evaluate one: the
    global weights come without any site's normalisation statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over every batch
    was_training = model.training
    model.train()
    for images in batches:
        model(images)
    model.train(was_training)
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
