"""The Flower ServerApp: records the federation around the chosen Flower strategy, evaluates centrally each round."""

from __future__ import annotations

import copy
import logging
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from sqlalchemy.orm import Session

from core.broadcast.producer import producer_from_env
from core.config import RunConfig
from core.data import PreparedDataset, XrayDataset
from core.data.dataset import collate
from core.data.prepare import prepare_dataset
from core.events import RunError, TrainingEnd, TrainingStart
from core.federated.central_rounds import EvaluationQueue, SerialSink
from core.federated.local_layers import recalibrate_normalisation, site_local_keys, split_state
from core.federated.plan_query import PlanGate
from core.federated.prompt_grid import PromptGrid
from core.federated.recorder import RecordingStrategy, RoundFailed, weighted_metrics
from core.federated.server_state import ContinuedRounds, ServerState, capture, restore
from core.federated.settings import FederationConfig, ServerSettings, owner_pid
from core.federated.site_names import SiteNames
from core.federated.strategies import build_aggregation
from core.model.checkpoint import run_folder, save_checkpoint, shared_state, weights_sha256
from core.model.module import PneumoniaClassifier
from core.persistence import Database, DatabaseSink
from core.persistence.artifacts import artifact_bytes
from core.persistence.identity import database_identity
from core.persistence.keeper import ArtifactKeeper
from core.persistence.resumes import ResumeRefused, reopen_federation, resumable_server_run
from core.persistence.runs import create_run
from core.reporting import ModelRecord, Privacy, RunReport
from core.reporting.evaluate import evaluate_report
from core.sinks import EventSink, SinkSet
from core.stats.bootstrap import RESAMPLES
from core.training.evaluation import Predictions, predict_logits
from core.training.runner import load_shared_weights
from core.training.selection import selection_key

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
        resume: ServerState | None = None
        with db.begin() as session:
            if plan.continues and settings.resume_run_id:
                run_id = settings.resume_run_id
                resume = continue_server_run(session, run_id, int(context.run_id))
            else:
                run_id = create_run(
                    session,
                    experiment_name=plan.name,
                    training_mode="federated",
                    role="server",
                    config=plan.to_dict() | {"eval_data": evaluator.source},
                    source_path=evaluator.source,
                    flower_run_id=int(context.run_id),
                    server_address=settings.address or None,
                    owner_pid=owner_pid(),
                )
            work_dir = Path(settings.work_dir or run_folder(run_id, database_identity(session)))
            best = artifact_bytes(session, run_id, "best") if resume is not None else None
        if best is not None:  # the best round so far, where the run's tracker expects it
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / "best.ckpt").write_bytes(best)
        sink = SinkSet([DatabaseSink(db, run_id), *([producer] if producer else [])])
        sink.run_id = run_id
        keeper = ArtifactKeeper(db, run_id)
        try:
            names = SiteNames(Path(settings.sites_file)) if settings.sites_file else None
            run_federation(
                grid, plan, sink, run_id, evaluator, work_dir, site_names=names, keeper=keeper, resume=resume
            )
        finally:
            keeper.close()
            sink.close()
    finally:
        if producer is not None:
            producer.close()
        db.close()


def continue_server_run(session: Session, run_id: int, flower_run_id: int) -> ServerState:
    """Reopen server run ``run_id`` after the last round it kept, in Flower run ``flower_run_id``; its state.

    Raises
    ------
    core.persistence.resumes.ResumeRefused
        If the run cannot continue, or kept no state (it stopped before its first round ended).
    """
    run = resumable_server_run(session, run_id, owner_pid())
    content = artifact_bytes(session, run_id, "server_state")
    if content is None:
        raise ResumeRefused(
            f"Federation run {run_id} kept no state to continue from: it stopped before its first round ended."
        )
    state = ServerState.from_bytes(content)
    reopen_federation(session, run, from_round=state.round_number, flower_run_id=flower_run_id, owner=owner_pid())
    return state


def run_federation(
    grid: Grid,
    plan: FederationConfig,
    sink: EventSink,
    run_id: int,
    evaluator: CentralEvaluator,
    work_dir: Path,
    *,
    site_names: SiteNames | None = None,
    keeper: ArtifactKeeper | None = None,
    resume: ServerState | None = None,
) -> None:
    """Train ``plan.rounds`` rounds; end the run with the best round by the server's evaluation.

    After every round, ``keeper`` keeps the server's state (see :mod:`core.federated.server_state`) and each new
    best round's weights with the run. ``resume`` is such a state: the federation continues at the round after it,
    with the strategy's memory and the privacy accountant's ledger as they were.
    """
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
    aggregation = build_aggregation(plan, weighted_metrics)
    published = SerialSink(sink)  # Flower's thread and the central evaluation's both publish
    strategy = RecordingStrategy(
        aggregation,
        published,
        run_id,
        min_sites=plan.min_sites,
        round_timeout=plan.round_timeout,
        site_names=site_names.read if site_names is not None else None,
        wire_precision=plan.wire_precision,
    )
    tracker = BestRound(plan.training, work_dir / "best.ckpt", keeper)
    evaluations = EvaluationQueue()

    def evaluate_and_record(
        server_round: int, state: dict[str, torch.Tensor], kept: ServerState | None, spent: dict[str, float] | None
    ) -> None:
        logits = evaluator.logits(state)
        report = evaluator.report(logits, resamples=0)
        metrics = {f"val_{k}": v for k, v in report.metrics("val").values.items() if isinstance(v, (int, float))}
        if server_round > 0:  # round 0 is the untrained initial model
            tracker.offer(server_round, metrics, evaluator.state(), logits)
            if keeper is not None and kept is not None:
                kept = replace(kept, best=tracker.state_dict())
                keeper.keep_bytes("server_state", "server_state.pt", kept.to_bytes())
        strategy.round_metrics(server_round, metrics, spent)

    def evaluate(server_round: int, arrays: ArrayRecord) -> None:
        """Queue the round's evaluation (see core.federated.central_rounds); Flower sends the next round at once."""
        state = arrays.to_torch_state_dict()
        kept, spent = None, None
        if server_round > 0:  # the strategy's memory and the privacy spent as they are after this round
            spent = aggregation.privacy_spent()
            if keeper is not None:
                kept = capture(aggregation, server_round, state, {})
                kept = replace(kept, strategy=copy.deepcopy(kept.strategy), accountant=copy.deepcopy(kept.accountant))
        evaluations.submit(evaluate_and_record, server_round, state, kept, spent)

    model = evaluator.new_model()
    # Site-local tensors (FedBN's normalisation layers; BatchNorm statistics under differential privacy or a
    # server optimizer) never travel, not even the initial ones.
    initial = ArrayRecord(split_state(shared_state(model), evaluator.local_keys(model))[0])
    rounds, runner, evaluate_rounds = plan.rounds, strategy, evaluate
    if resume is not None:
        restore(aggregation, resume)
        tracker.load_state_dict(resume.best)
        initial = ArrayRecord(resume.global_state)
        continued = ContinuedRounds(strategy, resume.round_number)
        rounds, runner, evaluate_rounds = plan.rounds - resume.round_number, continued, continued.evaluate_fn(evaluate)
    status, error = "completed", None
    prompt = PromptGrid(grid, on_reply=strategy.arrived.__setitem__)
    try:
        # Before any training: every site decides on the plan (its policy, then its consent); sites seen later
        # are asked when they appear. Only sites that approved are ever offered to the strategy.
        prompt.gate = PlanGate(grid, strategy)
        prompt.gate.wait_first(plan.min_sites, plan.round_timeout)
        result = runner.start(
            grid=prompt,
            initial_arrays=initial,
            num_rounds=rounds,
            timeout=plan.round_timeout,
            train_config=ConfigRecord({"num-rounds": plan.rounds}),
            evaluate_fn=evaluate_rounds,
        )
        evaluations.drain()  # the last round's evaluation, and any that failed
        work_dir.mkdir(parents=True, exist_ok=True)
        torch.save(result.arrays.to_torch_state_dict(), work_dir / "global_model.pt")
        if keeper is not None:  # the last global model with the run (the best round's is kept as it happens)
            keeper.keep("global_last", work_dir / "global_model.pt")
    except RoundFailed as exc:
        status, error = "failed", str(exc)
        published.handle(RunError(run_id=run_id, message=error, source="federation", fatal=True))
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("federation %s failed", run_id)
        published.handle(
            RunError(run_id=run_id, message=error, source="federation", fatal=True, details=traceback.format_exc())
        )
    evaluations.close()  # a failed federation still records the rounds it evaluated
    best = tracker.round
    sink.handle(
        TrainingEnd(
            run_id=run_id,
            status=status,
            best_epoch=best,
            best_val_recall=tracker.metrics.get("val_recall"),
            best_metrics=tracker.metrics,
            duration=time.monotonic() - started,
            # The full statistics (with intervals) only for the round that is reported.
            final_stats=replace(
                tracker.report(evaluator), privacy=privacy_record(plan, aggregation.privacy_spent())
            ).to_dict()
            | data_fingerprint(strategy.fingerprints),
            error=error,
        )
    )


def data_fingerprint(by_site: dict[str, dict]) -> dict[str, dict]:
    """``{"data_fingerprint": ...}``: the sum of the fingerprints the sites sent, or nothing when none did."""
    from core.data.fingerprint import merge_fingerprints

    return {"data_fingerprint": merge_fingerprints(by_site)} if by_site else {}


def privacy_record(plan: FederationConfig, spent: dict[str, float] | None) -> Privacy | None:
    """The privacy a differentially private federation spent (``None`` without differential privacy)."""
    if spent is None:
        return None
    return Privacy(
        epsilon=spent["dp_epsilon"],
        delta=spent["dp_delta"],
        releases=int(spent["dp_releases"]),
        noise_multiplier=plan.dp_noise,
        clipping=plan.dp_clipping,
        clipping_norm=plan.dp_clip,
        accounting="Renyi DP, Flower's RdpAccountant (no sampling amplification)",
    )


class BestRound:
    """The best round so far by the server's evaluation (see :mod:`core.training.selection`); its weights on disk."""

    def __init__(self, config: RunConfig, path: Path, keeper: ArtifactKeeper | None = None) -> None:
        self.monitor, self.mode, self.backbone, self.path = config.monitor, config.monitor_mode, config.backbone, path
        self.keeper = keeper
        self.round: int | None = None
        self.metrics: dict[str, float] = {}
        self.logits: Predictions = {}
        self._key: tuple | None = None

    def report(self, evaluator: CentralEvaluator) -> RunReport:
        """The full statistics (with intervals) of the best round, and where its weights are."""
        if not self.logits:
            return RunReport()
        state = torch.load(self.path, map_location="cpu", weights_only=True)["state_dict"]
        record = ModelRecord(
            backbone=self.backbone,
            image_size=evaluator.config.image_size,
            weights_sha256=weights_sha256(state),
            checkpoint=str(self.path.resolve()),
        )
        return evaluator.report(self.logits, model=record)

    def offer(
        self, number: int, metrics: dict[str, float], state: dict[str, torch.Tensor], logits: Predictions
    ) -> None:
        """Keep round ``number`` if it beats the best so far (earliest on a tie)."""
        key = selection_key(metrics, self.monitor, self.mode)
        if key is None or (self._key is not None and key <= self._key):
            return
        self.round, self.metrics, self.logits, self._key = number, metrics, logits, key
        save_checkpoint(self.path, state, number, self.backbone)
        if self.keeper is not None:
            self.keeper.keep("best", self.path)

    def state_dict(self) -> dict[str, Any]:
        """The best round so far with its evaluation (its weights are the ``best`` artifact)."""
        key = list(self._key) if self._key is not None else None
        return {"round": self.round, "metrics": self.metrics, "logits": self.logits, "key": key}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the best round of an interrupted federation (its weights must be at ``path``)."""
        self.round, self.metrics = state.get("round"), dict(state.get("metrics") or {})
        self.logits = {split: tuple(pair) for split, pair in (state.get("logits") or {}).items()}
        key = state.get("key")
        self._key = tuple(key) if key is not None else None


class CentralEvaluator:
    """Evaluates a global model on the server's held-out set (the same statistics as a centralized run)."""

    def __init__(self, plan: FederationConfig, settings: ServerSettings) -> None:
        self.config = plan.training.with_overrides(data_path=settings.eval_data, demo=False)
        self.data: PreparedDataset | None = None
        self.samples: list = []
        self.source = settings.eval_data
        if settings.eval_data:
            self.data = prepare_dataset(self.config, cache_dir=Path(settings.cache_dir) if settings.cache_dir else None)
            self.source = self.data.summary.source
            self.samples = (
                [*self.data.train, *self.data.val, *self.data.test]
                if settings.eval_split == "all"
                else list(getattr(self.data, settings.eval_split))
            )
        self.local_bn, self.local_statistics = plan.local_bn, plan.local_statistics
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

    def local_keys(self, model: torch.nn.Module) -> set[str]:
        """The tensors the sites keep to themselves (see :func:`core.federated.local_layers.site_local_keys`)."""
        return site_local_keys(model, local_bn=self.local_bn, statistics=self.local_statistics)

    def logits(self, state: dict[str, torch.Tensor]) -> Predictions:
        """``{"val": (logits, targets)}`` of the model with ``state`` on the held-out set (empty without one)."""
        if not self.samples:
            return {}
        if self._model is None:
            self._model = self.new_model()
        local = self.local_keys(self._model)
        load_shared_weights(self._model, state, allow_missing=local)
        loader = torch.utils.data.DataLoader(
            XrayDataset(self.samples, self.config.image_size, train=False),
            batch_size=self.config.batch_size,
            collate_fn=collate,
        )
        if local:
            # No site's normalisation statistics reach the server: estimate them on the held-out images (no
            # labels used), as a new site would before using the model.
            recalibrate_normalisation(self._model, (images for images, *_ in loader))
        return {"val": predict_logits(self._model, loader)}

    def state(self) -> dict[str, torch.Tensor]:
        """The weights just evaluated, normalisation included (what the run's best checkpoint keeps)."""
        assert self._model is not None, "logits() first"
        return shared_state(self._model)

    def report(self, logits: Predictions, resamples: int = RESAMPLES, model: ModelRecord | None = None) -> RunReport:
        """The report of held-out logits (temperature-scaled when the plan asks for it)."""
        if not logits:
            return RunReport()
        return evaluate_report(
            logits,
            self.config.threshold,
            temperature_scaling=self.config.temperature_scaling,
            resamples=resamples,
            model=model,
        )
