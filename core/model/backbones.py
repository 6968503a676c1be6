"""torchvision backbones with a single-logit head. Nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models

from core.config import BACKBONES
from core.errors import ConfigError


def build_backbone(name: str, weights_path: str | Path | None = None) -> nn.Module:
    """Build ``name`` from scratch with a one-logit classification head.

    Parameters
    ----------
    name
        One of :data:`core.config.BACKBONES`.
    weights_path
        Optional local ``state_dict`` file (a torchvision checkpoint for the same architecture, or one
        saved by PneumoFL). The original 1000-class head is dropped when shapes differ.

    Raises
    ------
    ConfigError
        For an unknown backbone or a weights file that cannot be read or does not fit.
    """
    if name not in BACKBONES:
        raise ConfigError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    model: nn.Module = small_cnn() if name == "small_cnn" else getattr(models, name)(weights=None)
    if weights_path:
        _load_weights(model, name, Path(weights_path).expanduser())
    _replace_head(model, name)
    return model


def small_cnn(width: int = 16) -> nn.Sequential:
    """A four-block CNN (~0.1 M weights in 18 tensors) for quick CPU trials and federations on slow links.

    Federated rounds move the whole model twice per site; a ResNet-18 is 45 MB each way.
    """
    blocks: list[nn.Module] = []
    channels = 3  # the dataset repeats the gray channel for ImageNet backbones
    for i in range(4):
        out = width * 2**i
        blocks += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        blocks.append(nn.MaxPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(1))
        channels = out
    return nn.Sequential(*blocks, nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels, 1000))


def _replace_head(model: nn.Module, name: str) -> None:
    if name == "small_cnn":
        model[-1] = nn.Linear(model[-1].in_features, 1)  # type: ignore[index,arg-type]
    elif name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, 1)  # type: ignore[union-attr,arg-type]
    elif name == "densenet121":
        model.classifier = nn.Linear(model.classifier.in_features, 1)  # type: ignore[union-attr,arg-type]
    else:  # efficientnet_b0, mobilenet_v3_small: the last Linear of `classifier`
        head = model.classifier[-1]  # type: ignore[index]
        model.classifier[-1] = nn.Linear(head.in_features, 1)  # type: ignore[index]


def _load_weights(model: nn.Module, name: str, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"Weights file {path} does not exist.") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise ConfigError(f"Weights file {path} could not be read as a PyTorch state dict ({exc}).") from None
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) // 2:
        raise ConfigError(
            f"Weights file {path} does not fit a {name}: only {len(usable)} of {len(own)} tensors match. "
            "Pick weights saved for this backbone."
        )
    model.load_state_dict(usable, strict=False)
