"""The best-weights file of a run: ``{"state_dict", "epoch", "backbone"}``, written atomically, read anywhere."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
import torch
from torch import nn

from core.errors import PneumoFLError

if TYPE_CHECKING:
    from core.model.module import PneumoniaClassifier

LOCAL_STATE_PREFIXES = ("criterion.",)  # a site's class balance is its own, not the model's


def run_folder(run_id: int, database: str = "") -> Path:
    """The working folder of run ``run_id`` of the database whose identity is ``database``, in the user data dir.

    What a run keeps lives in its database (``core.persistence.artifacts``); this folder holds the working copies
    while it trains. Named by the database too, so two databases' runs with the same number never share one.
    Without ``database``: the folder of a run recorded before its database kept artifacts (migration 0009).
    """
    root = Path(platformdirs.user_data_dir("pneumofl")) / "runs"
    return (root / database / str(run_id)) if database else root / str(run_id)


def shared_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights without the loss's buffers, on the CPU."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if not k.startswith(LOCAL_STATE_PREFIXES)}


def save_checkpoint(path: Path, state: Mapping[str, torch.Tensor], epoch: int | None, backbone: str) -> None:
    """Write the weights so that a crash mid-save never leaves a broken file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"state_dict": dict(state), "epoch": epoch, "backbone": backbone}, partial)
    partial.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors only: never unpickles code).

    Raises
    ------
    PneumoFLError
        Naming the file, when it is missing or not a PneumoFL checkpoint.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PneumoFLError(f"The model file {path} does not exist (was the run's folder deleted?).") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise PneumoFLError(f"The model file {path} could not be read ({exc}).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise PneumoFLError(f"The model file {path} is not a PneumoFL checkpoint.")
    return checkpoint


def load_classifier(path: Path, backbone: str | None = None) -> PneumoniaClassifier:
    """The classifier with the weights of checkpoint ``path``, in eval mode on the CPU.

    Parameters
    ----------
    path
        A checkpoint from :func:`save_checkpoint`.
    backbone
        The architecture, when the file does not name it (it always does since version 0.1).
    """
    from core.model.module import PneumoniaClassifier  # Lightning loads only for the LightningModule

    checkpoint = read_checkpoint(path)
    name = _backbone_name(checkpoint, path, backbone)
    model = PneumoniaClassifier(backbone=name)
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith(LOCAL_STATE_PREFIXES)]
    if missing or unexpected:
        raise PneumoFLError(
            f"The model file {path} does not fit a {name} (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    return model.eval()


def load_backbone(path: Path, backbone: str | None = None) -> tuple[nn.Module, str, str]:
    """``(backbone module in eval mode, its name, weights_sha256)`` of checkpoint ``path``, without Lightning.

    What reading images needs: the network alone, and the fingerprint to check it against the run's.
    """
    from core.model.backbones import build_backbone

    checkpoint = read_checkpoint(path)
    name = _backbone_name(checkpoint, path, backbone)
    state = checkpoint["state_dict"]
    module = build_backbone(name)
    own = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        module.load_state_dict(own)
    except RuntimeError as exc:
        raise PneumoFLError(f"The model file {path} does not fit a {name} ({str(exc).splitlines()[0]}).") from None
    return module.eval(), name, weights_sha256(state)


def _backbone_name(checkpoint: dict[str, Any], path: Path, backbone: str | None) -> str:
    name = checkpoint.get("backbone") or backbone
    if not name:
        raise PneumoFLError(f"The model file {path} does not say which backbone it holds.")
    return str(name)


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A fingerprint of the weights themselves (names, dtypes, shapes, values), whatever file holds them.

    The same weights give the same value from a checkpoint, a TorchScript export or the federated server's
    best round, so a reading recorded by an exported model traces back to its run.
    """
    digest = hashlib.sha256()
    for name in sorted(k for k in state if not k.startswith(LOCAL_STATE_PREFIXES)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
