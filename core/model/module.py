"""The LightningModule: backbone + weighted loss + torchmetrics for every split."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinaryROC,
    BinarySpecificity,
)

from core.model.backbones import build_backbone
from core.model.losses import build_loss

SPLITS = ("train", "val", "test")


def make_metrics(threshold: float = 0.5) -> MetricCollection:
    """The binary metrics every split reports, at ``threshold`` (AUROC is threshold-free)."""
    return MetricCollection(
        {
            "accuracy": BinaryAccuracy(threshold=threshold),
            "precision": BinaryPrecision(threshold=threshold),
            "recall": BinaryRecall(threshold=threshold),
            "specificity": BinarySpecificity(threshold=threshold),
            "f1": BinaryF1Score(threshold=threshold),
            "auroc": BinaryAUROC(),
            "cm": BinaryConfusionMatrix(threshold=threshold),
        }
    )


def flatten_metrics(computed: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
    """Turn a computed collection into ``{prefix}_{metric}`` floats, splitting the confusion matrix."""
    out: dict[str, float] = {}
    for name, value in computed.items():
        if name == "cm":
            (tn, fp), (fn, tp) = value.tolist()
            out.update({f"{prefix}_cm_tp": tp, f"{prefix}_cm_fp": fp, f"{prefix}_cm_tn": tn, f"{prefix}_cm_fn": fn})
        else:
            out[f"{prefix}_{name}"] = float(value)
    return out


class PneumoniaClassifier(pl.LightningModule):
    """Single-logit pneumonia classifier.

    Parameters
    ----------
    backbone, weights_path
        See :func:`core.model.backbones.build_backbone`.
    learning_rate, weight_decay
        AdamW settings; the rate follows a cosine schedule over ``epochs``.
    loss, focal_gamma, pos_weight
        ``bce`` or ``focal``; ``pos_weight`` (negatives / positives) balances the classes.
    threshold
        Probability above which a prediction counts as pneumonia.
    proximal_mu
        FedProx: adds ``mu / 2 * ||w - w_global||^2`` to the training loss, where ``w_global`` are the weights
        when :meth:`anchor_proximal_term` was called (the global model a federated round starts from).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        weights_path: str | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        epochs: int = 20,
        loss: str = "bce",
        focal_gamma: float = 2.0,
        pos_weight: float | None = None,
        threshold: float = 0.5,
        proximal_mu: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._anchor: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.model = build_backbone(backbone, weights_path)
        self.criterion = build_loss(loss, pos_weight, focal_gamma)
        # ModuleDict keys may not shadow Module attributes ("train" is a method), hence the suffix.
        self.split_metrics = torch.nn.ModuleDict({f"{s}_metrics": make_metrics(threshold) for s in SPLITS})
        self.split_losses = torch.nn.ModuleDict({f"{s}_loss": MeanMetric() for s in SPLITS})
        self.last_val_metrics: dict[str, float] = {}
        # Binned ROC: constant memory, enough resolution for the live chart.
        self.val_roc = BinaryROC(thresholds=101)
        self.last_val_roc: dict[str, list[float]] = {}

    def anchor_proximal_term(self) -> None:
        """Take the current weights as FedProx's ``w_global`` (a copy, not part of the state dict)."""
        self._anchor = [(p, p.detach().clone()) for p in self.model.parameters() if p.requires_grad]

    def proximal_term(self) -> torch.Tensor | None:
        """``mu / 2 * ||w - w_global||^2`` over the trainable weights (None without FedProx)."""
        mu = float(self.hparams.get("proximal_mu", 0.0))
        if mu <= 0 or not self._anchor:
            return None
        squared = sum(((p - anchor.to(p.device)) ** 2).sum() for p, anchor in self._anchor)
        return 0.5 * mu * squared  # type: ignore[return-value]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one logit per image."""
        return self.model(images).squeeze(1)

    def _step(self, batch: Any, split: str) -> dict[str, torch.Tensor] | None:
        images, targets = batch[0], batch[1]
        if targets.numel() == 0:
            return None  # every file of the batch became unreadable (see core.data.dataset.Batch)
        logits = self(images)
        loss = self.criterion(logits, targets)
        probs = torch.sigmoid(logits.detach())
        self._metrics(split).update(probs, targets.int())
        self._loss(split).update(loss.detach(), weight=targets.numel())
        if split == "val":
            self.val_roc.update(probs, targets.int())
        return {"loss": loss, "probs": probs, "targets": targets}

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """Train on one batch; the outputs feed the batch-metrics callback.

        A batch left with fewer than two readable images is skipped (BatchNorm cannot train on one).
        """
        if batch[1].numel() < 2:
            return None
        outputs = self._step(batch, "train")
        proximal = self.proximal_term()
        if outputs is not None and proximal is not None:
            # Lightning minimises "loss"; the recorded training loss stays the classification loss alone.
            outputs["data_loss"] = outputs["loss"]
            outputs["loss"] = outputs["loss"] + proximal
        return outputs

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Accumulate validation metrics."""
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Accumulate test metrics."""
        self._step(batch, "test")

    def on_train_epoch_start(self) -> None:
        """Start the epoch's training metrics from zero."""
        self.reset_split("train")

    def on_validation_epoch_end(self) -> None:
        """Compute validation metrics once and expose them to checkpointing and early stopping."""
        self.last_val_metrics = self.compute_split("val")
        if self.val_roc.update_count:
            fpr, tpr, _ = self.val_roc.compute()
            self.last_val_roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
            self.val_roc.reset()
        for name, value in self.last_val_metrics.items():
            self.log(name, value, prog_bar=name in ("val_loss", "val_recall", "val_auroc"))

    def compute_split(self, split: str) -> dict[str, float]:
        """Compute and reset the accumulated metrics of ``split`` as ``{split}_{metric}`` floats."""
        if self._loss(split).update_count == 0:
            return {}
        values = flatten_metrics(self._metrics(split).compute(), split)
        values[f"{split}_loss"] = float(self._loss(split).compute())
        self.reset_split(split)
        return values

    def reset_split(self, split: str) -> None:
        """Forget the accumulated state of ``split``."""
        self._metrics(split).reset()
        self._loss(split).reset()

    def _metrics(self, split: str) -> MetricCollection:
        return self.split_metrics[f"{split}_metrics"]  # type: ignore[return-value]

    def _loss(self, split: str) -> MeanMetric:
        return self.split_losses[f"{split}_loss"]  # type: ignore[return-value]

    def configure_optimizers(self) -> Any:
        """AdamW with a per-epoch cosine schedule."""
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["learning_rate"], weight_decay=self.hparams["weight_decay"]
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams["epochs"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
