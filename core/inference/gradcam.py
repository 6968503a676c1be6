"""Grad-CAM heatmaps of the pneumonia logit, with captum: where in the image the model's evidence lies.

The heatmap is computed on an eval-mode copy of the backbone with gradients enabled (the training model and
its BatchNorm statistics are never touched), at the last convolutional feature map of each backbone, and
upsampled to the input size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def target_layer(backbone: nn.Module, name: str) -> nn.Module:
    """The last convolutional feature map of each backbone PneumoFL offers (see ``core.config.BACKBONES``)."""
    if name.startswith("resnet"):
        return backbone.layer4[-1]  # type: ignore[index,union-attr]
    if name in ("densenet121", "efficientnet_b0", "mobilenet_v3_small"):
        return backbone.features[-1]  # type: ignore[index,union-attr]
    if name == "small_cnn":
        # The last activation before global pooling: the finest map that still sees the whole image.
        layers = list(backbone.children())
        pool = next(i for i, layer in enumerate(layers) if isinstance(layer, nn.AdaptiveAvgPool2d))
        return next(layer for layer in reversed(layers[:pool]) if isinstance(layer, nn.ReLU))
    raise ValueError(f"no Grad-CAM layer known for backbone {name!r}")


class GradCam:
    """Grad-CAM of one backbone (single-logit head): ``heatmaps(images)`` gives ``(N, S, S)`` maps in [0, 1].

    Parameters
    ----------
    backbone
        The ``nn.Module`` mapping ``(N, 3, S, S)`` images to ``(N, 1)`` logits; it is copied, not modified.
    name
        Its name in ``core.config.BACKBONES`` (picks the layer).
    """

    def __init__(self, backbone: nn.Module, name: str) -> None:
        self.model = copy.deepcopy(backbone).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)  # gradients flow to the feature map only, not into every weight
        from captum.attr import LayerGradCam  # loads only when a heatmap is asked for

        self.cam = LayerGradCam(self.model, target_layer(self.model, name))

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """Positive evidence for pneumonia per pixel, each map scaled to a maximum of 1 (all 0 without any)."""
        with torch.enable_grad(), torch.inference_mode(False):
            inputs = images.detach().clone().requires_grad_(True)
            maps = self.cam.attribute(inputs, target=0, relu_attributions=True)
        maps = torch.nn.functional.interpolate(maps.detach(), size=tuple(images.shape[-2:]), mode="bilinear")
        maps = maps[:, 0].clamp_min(0)
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return torch.where(peak > 1e-12, maps / peak, torch.zeros_like(maps))
