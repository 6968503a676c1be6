"""The Flower ServerApp: records the federation, runs :class:`RecordedFedAvg`, evaluates centrally each round."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from core.broadcast.producer import producer_from_env
from core.data import PreparedDataset, XrayDataset
from core.data.dataset import collate
from core.events import RunError, TrainingEnd, TrainingStart
from core.federated.settings import FederationConfig, ServerSettings, owner_pid
from core.federated.site_cache import prepare_data_cached
from core.federated.strategy import RecordedFedAvg, RoundFailed
from core.model.module import PneumoniaClassifier
from core.persistence import Database, DatabaseSink
from core.persistence.repository import create_run
from core.sinks import EventSink, SinkSet
from core.training.evaluation import final_stats, predict
from core.training.recorded import run_folder
from core.training.runner import load_shared_weights, shared_weights

log = logging.getLogger(__name__)
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation recorded at the server: one run (role server) with its sites, rounds and evaluations."""
    plan = FederationConfig.from_run_config(context.run_config)
    settings = ServerSettings.from_env()
    db = Database.open(settings.db_url, migrate=False)  # the node migrated it before starting
    producer = producer_from_env()
    try:
        evaluator = CentralEvaluator(plan, settings)
        with db.begin() as session:
            run_id = create_run(
                session,
                experiment_name=plan.name,
                training_mode="federated",
                role="server",
                config=plan.to_dict() | {"eval_data": evaluator.source},
                source_path=evaluator.source,
                federation_run_id=str(context.run_id),
                server_address=settings.address or None,
                owner_pid=owner_pid(),
            )
        sink = SinkSet([DatabaseSink(db, run_id), *([producer] if producer else [])])
        sink.run_id = run_id
        try:
            run_federation(grid, plan, sink, run_id, evaluator, Path(settings.work_dir or run_folder(run_id)))
        finally:
            sink.close()
    finally:
        if producer is not None:
            producer.close()
        db.close()


def run_federation(
    grid: Grid,
    plan: FederationConfig,
    sink: EventSink,
    run_id: int,
    evaluator: CentralEvaluator,
    work_dir: Path,
) -> None:
    """Train ``plan.rounds`` rounds; end the run with the best round by server validation recall."""
    started = time.monotonic()
    sink.handle(
        TrainingStart(
            run_id=run_id,
            experiment_name=plan.name,
            training_mode="federated",
            role="server",
            total_epochs=plan.rounds,
            config=plan.to_dict(),
        )
    )
    strategy = RecordedFedAvg(sink, run_id, min_sites=plan.min_sites, round_timeout=plan.round_timeout)
    history: dict[int, dict[str, Any]] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        stats = evaluator(arrays.to_torch_state_dict())
        history[server_round] = stats
        metrics = {f"val_{k}": v for k, v in (stats.get("val") or {}).items() if isinstance(v, (int, float))}
        strategy.round_metrics(server_round, metrics)
        return MetricRecord(metrics)

    initial = ArrayRecord(shared_weights(evaluator.new_model()))
    status, error = "completed", None
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=plan.rounds,
            timeout=plan.round_timeout,
            train_config=ConfigRecord({"num-rounds": plan.rounds}),
            evaluate_fn=evaluate,
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        torch.save(result.arrays.to_torch_state_dict(), work_dir / "global_model.pt")
    except RoundFailed as exc:
        status, error = "failed", str(exc)
        sink.handle(RunError(run_id=run_id, message=error, source="federation", fatal=True))
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("federation %s failed", run_id)
        sink.handle(
            RunError(run_id=run_id, message=error, source="federation", fatal=True, details=traceback.format_exc())
        )
    best = best_round(history)
    sink.handle(
        TrainingEnd(
            run_id=run_id,
            status=status,
            best_epoch=best,
            best_val_recall=(history.get(best, {}).get("val") or {}).get("recall") if best is not None else None,
            duration=time.monotonic() - started,
            final_stats=history.get(best, {}) if best is not None else {},
            error=error,
        )
    )


def best_round(history: dict[int, dict[str, Any]]) -> int | None:
    """The round (not the initial model, round 0) with the best server validation recall; AUROC breaks ties."""
    scored = [
        ((stats.get("val") or {}).get("recall", -1.0), (stats.get("val") or {}).get("auroc", -1.0), number)
        for number, stats in history.items()
        if number > 0
    ]
    return max(scored)[2] if scored else None


class CentralEvaluator:
    """Evaluates a global model on the server's held-out set (the same statistics as a centralized run)."""

    def __init__(self, plan: FederationConfig, settings: ServerSettings) -> None:
        self.config = plan.training.with_overrides(data_path=settings.eval_data, demo=False)
        self.data: PreparedDataset | None = None
        self.samples: list = []
        self.source = settings.eval_data
        if settings.eval_data:
            self.data = prepare_data_cached(self.config, Path(settings.cache_dir) if settings.cache_dir else None)
            self.source = self.data.summary.source
            self.samples = (
                [*self.data.train, *self.data.val, *self.data.test]
                if settings.eval_split == "all"
                else list(getattr(self.data, settings.eval_split))
            )
        self._model: PneumoniaClassifier | None = None

    def new_model(self) -> PneumoniaClassifier:
        """The model every site trains, freshly initialised (seeded: the same start for every run)."""
        torch.manual_seed(self.config.seed)
        return PneumoniaClassifier(
            backbone=self.config.backbone,
            weights_path=self.config.weights_path or None,
            epochs=self.config.epochs,
            threshold=self.config.threshold,
        )

    def __call__(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``final_stats`` of the model with ``state`` on the held-out set (empty without one)."""
        if not self.samples:
            return {}
        if self._model is None:
            self._model = self.new_model()
        load_shared_weights(self._model, state)
        loader = torch.utils.data.DataLoader(
            XrayDataset(self.samples, self.config.image_size, train=False),
            batch_size=self.config.batch_size,
            collate_fn=collate,
        )
        return final_stats({"val": predict(self._model, loader)}, self.config.threshold)
