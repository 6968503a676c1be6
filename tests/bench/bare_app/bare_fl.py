"""A plain Flower app with the same model, data, schedule and evaluations as PneumoFL's, and nothing else.

The ClientApp evaluates the received model on the site's validation split (loss and AUROC, as PneumoFL's
cross-site evaluation does), then trains with a bare torch loop (AdamW, BCE with the same class weighting); the
ServerApp runs Flower's FedAvg and evaluates every global model centrally on the same held-out set, with the same
numbers (loss, AUROC, sensitivity, specificity; torchmetrics). It writes per-round wall times to the file named by
``PNEUMOFL_BENCH_OUT``, with each round's longest site training time. No Lightning, callbacks, sinks, database
or live events: it imports torch, torchvision (the model), torchmetrics and PneumoFL's Lightning-free data code.
"""

from __future__ import annotations

import json
import os
import time

import torch
import torchmetrics.functional.classification as tmf
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch.utils.data import DataLoader

from core.data import XrayDataset
from core.data.validation import check_data, require_trainable
from core.federated.settings import FederationConfig, ServerSettings, SiteSettings
from core.federated.site_data import prepare_site_data, site_training_config
from core.model.backbones import build_backbone

client = ClientApp()
server = ServerApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global model for the local epochs with a bare loop."""
    plan = FederationConfig.from_run_config(context.run_config)
    site = SiteSettings.from_env()
    config = site_training_config(plan, site)
    if config.max_threads:
        torch.set_num_threads(config.max_threads)
    data = prepare_site_data(config, site)
    torch.manual_seed(config.seed)
    model = build_backbone(config.backbone)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    cross_site = _evaluate(model, DataLoader(XrayDataset(data.val, config.image_size, train=False), batch_size=64))
    positives = sum(s.label for s in data.train)
    weight = torch.tensor((len(data.train) - positives) / max(positives, 1))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loader = DataLoader(
        XrayDataset(data.train, config.image_size, train=True),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(data.train) % config.batch_size == 1,
    )
    model.train()
    total = 0.0
    started = time.monotonic()
    for _ in range(plan.local_epochs):
        for images, labels in loader:
            optimiser.zero_grad()
            loss = loss_fn(model(images).squeeze(1), labels)
            loss.backward()
            optimiser.step()
            total += float(loss)
    reply = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {
                    "num-examples": len(data.train),
                    "train_loss": total / max(len(loader), 1),
                    "train_seconds": time.monotonic() - started,
                    **{f"global_val_{k}": v for k, v in cross_site.items() if k in ("loss", "auroc")},
                }
            ),
        }
    )
    return Message(content=reply, reply_to=msg)


@torch.inference_mode()
def _evaluate(model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
    """Loss, AUROC, sensitivity and specificity of ``model`` on ``loader`` (torchmetrics, as PneumoFL)."""
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        logits.append(model(images).squeeze(1))
        labels.append(targets)
    scores, truth = torch.cat(logits), torch.cat(labels)
    return {
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(scores, truth)),
        "auroc": float(tmf.binary_auroc(scores.sigmoid(), truth.long())),
        "sensitivity": float(tmf.binary_recall(scores.sigmoid(), truth.long())),
        "specificity": float(tmf.binary_specificity(scores.sigmoid(), truth.long())),
    }


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round starts (the span PneumoFL's rounds table records)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.training: dict[int, float] = {}  # the round's longest site training

    def configure_train(self, server_round, arrays, config, grid):
        self.started[server_round] = time.time()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        seconds = [float(m.content["metrics"].get("train_seconds", 0.0)) for m in replies if not m.has_error()]
        self.training[server_round] = max(seconds, default=0.0)
        return super().aggregate_train(server_round, replies)


@server.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg over the sites, central evaluation after every round."""
    plan = FederationConfig.from_run_config(context.run_config)
    settings = ServerSettings.from_env()
    config = plan.training.with_overrides(data_path=settings.eval_data, demo=False)
    held_out = getattr(require_trainable(check_data(config)), settings.eval_split)
    loader = DataLoader(XrayDataset(held_out, config.image_size, train=False), batch_size=config.batch_size)
    torch.manual_seed(config.seed)
    model = build_backbone(config.backbone)
    strategy = TimedFedAvg(fraction_evaluate=0.0, min_train_nodes=plan.min_sites, min_available_nodes=plan.min_sites)
    rounds: dict[int, float] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = _evaluate(model, loader)
        if server_round in strategy.started:
            rounds[server_round] = time.time() - strategy.started[server_round]
        return MetricRecord({f"val_{k}": v for k, v in metrics.items()})

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=plan.rounds,
        timeout=plan.round_timeout,
        train_config=ConfigRecord({"num-rounds": plan.rounds}),
        evaluate_fn=evaluate,
    )
    with open(os.environ["PNEUMOFL_BENCH_OUT"], "w", encoding="utf-8") as out:
        json.dump(
            {
                "round_seconds": [rounds[r] for r in sorted(rounds)],
                "train_seconds": [strategy.training.get(r, 0.0) for r in sorted(rounds)],
                "first_round_started_at": strategy.started.get(1),
                "round_started_at": [strategy.started[r] for r in sorted(rounds)],
            },
            out,
        )
