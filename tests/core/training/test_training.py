"""Real end-to-end training on tiny images, recorded in real SQLite and PostgreSQL."""

import math
import threading
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_recall, binary_specificity

from core.data import XrayDataset
from core.data.prepare import prepare_dataset
from core.events import BatchMetrics, EarlyStopping, EpochEnd, GradientStats, LrUpdate, TrainingEnd, TrainingStart
from core.model.checkpoint import load_classifier
from core.persistence.metric_reads import epoch_table, final_stats, get_metrics
from core.persistence.runs import get_run, run_warnings
from core.sinks import EventSink, ListSink
from core.training.recorded import train_and_record
from core.training.runner import run_training

METRICS = ("loss", "accuracy", "precision", "recall", "specificity", "f1", "auroc", "cm_tp", "cm_fp", "cm_tn", "cm_fn")


def test_recorded_metrics_match_torchmetrics_recomputed_on_the_same_predictions(db, tiny_config, tmp_path):
    events = ListSink()
    result = train_and_record(tiny_config, db, sinks=[events], work_dir=tmp_path / "ckpt")
    assert result.status == "completed", result.error
    data = prepare_dataset(tiny_config)

    # Recompute from the best checkpoint on the validation images.
    model = load_classifier(Path(result.checkpoint_path))
    dataset = XrayDataset(data.val, tiny_config.image_size, train=False, cache=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    targets = torch.tensor([s.label for s in data.val])
    with torch.inference_mode():
        probs = torch.sigmoid(model(images))
    expected = {
        "recall": float(binary_recall(probs, targets)),
        "specificity": float(binary_specificity(probs, targets)),
        "auroc": float(binary_auroc(probs, targets)),
        "cm_tp": float(((probs >= 0.5) & (targets == 1)).sum()),
    }
    with db.begin() as session:
        stats = final_stats(session, result.run_id)
        epochs = {row["epoch"]: row for row in epoch_table(session, result.run_id)}
        run = get_run(session, result.run_id)
    for name, value in expected.items():
        assert stats["val"][name] == pytest.approx(value, abs=1e-5), name
        # The epoch row of the best epoch holds the very same validation numbers.
        assert epochs[result.best_epoch][f"val_{name}"] == pytest.approx(value, abs=1e-5), name
    assert run.status == "completed" and run.best_epoch == result.best_epoch
    assert run.best_val_recall == pytest.approx(epochs[result.best_epoch]["val_recall"])
    assert "test" in stats and 0.0 <= stats["youden"]["threshold"] <= 1.0


def test_every_metric_is_recorded_for_every_epoch_and_live_events_agree(db, tiny_config, tmp_path):
    events = ListSink()
    config = tiny_config.with_overrides(epochs=3)
    result = train_and_record(config, db, sinks=[events], work_dir=tmp_path)
    with db.begin() as session:
        table = epoch_table(session, result.run_id)
        batch_rows = get_metrics(session, result.run_id, context="batch")
    assert [row["epoch"] for row in table] == [1, 2, 3]
    for row in table:
        for split in ("train", "val"):
            for metric in METRICS:
                assert not math.isnan(row[f"{split}_{metric}"]), f"{split}_{metric} epoch {row['epoch']}"
    # Live events carry exactly what the database holds.
    live = {e.epoch: e.metrics for e in events.of_type(EpochEnd)}
    for row in table:
        for name, value in live[row["epoch"]].items():
            assert row[name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    # Train confusion matrix counts every training image once per epoch: no lag, no carry-over.
    n_train = len(prepare_dataset(config).train)
    for row in table:
        assert sum(row[f"train_cm_{k}"] for k in ("tp", "fp", "tn", "fn")) == n_train
    names = {r.metric_name for r in batch_rows}
    assert {"train_loss", "train_accuracy", "train_f1", "grad_norm", "lr"} <= names
    assert isinstance(events.events[0], TrainingStart) and isinstance(events.events[-1], TrainingEnd)


def test_gradient_norm_is_the_true_global_norm_and_batch_windows_are_real(tiny_config):
    events = ListSink()
    config = tiny_config.with_overrides(backbone="resnet18")
    run_training(config, prepare_dataset(config), events)
    grads = events.of_type(GradientStats)
    assert grads, "no gradient samples"
    for g in grads:
        assert g.global_norm == pytest.approx(math.sqrt(sum(v * v for v in g.layer_norms.values())), rel=1e-4)
        assert "fc.weight" in g.layer_norms
    batches = events.of_type(BatchMetrics)
    assert [b.step for b in batches] == sorted({b.step for b in batches})
    assert all(0.0 <= b.metrics["train_accuracy"] <= 1.0 for b in batches)
    assert len(events.of_type(LrUpdate)) == tiny_config.epochs


class CancelAfterFirstEpoch(EventSink):
    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def handle(self, event):
        if isinstance(event, EpochEnd):
            self.cancel.set()


def test_cancel_stops_within_a_batch_and_keeps_completed_epochs(db, tiny_config, tmp_path):
    cancel = threading.Event()
    config = tiny_config.with_overrides(epochs=20)
    result = train_and_record(config, db, sinks=[CancelAfterFirstEpoch(cancel)], cancel=cancel, work_dir=tmp_path)
    assert result.status == "cancelled"
    assert result.epochs_completed == 1
    with db.begin() as session:
        run = get_run(session, result.run_id)
        table = epoch_table(session, result.run_id)
    assert run.status == "cancelled" and [row["epoch"] for row in table] == [1]


class DeleteAfterEpochOne(EventSink):
    """Deletes ``victim`` when epoch 1 ends: the file vanishes mid-run, after the dataset check passed."""

    def __init__(self, victim):
        self.victim = victim

    def handle(self, event):
        if isinstance(event, EpochEnd) and self.victim.exists():
            self.victim.unlink()


def test_an_image_deleted_mid_run_is_skipped_and_the_warning_kept_with_the_run(db, tiny_config, tmp_path):
    config = tiny_config.with_overrides(cache_images=False, epochs=2)
    data = prepare_dataset(config)
    victim = data.train[0].path
    try:
        result = train_and_record(config, db, data=data, sinks=[DeleteAfterEpochOne(victim)], work_dir=tmp_path)
    finally:
        _restore(victim)
    assert result.status == "completed", result.error
    with db.begin() as session:
        warnings = run_warnings(session, result.run_id)
        table = epoch_table(session, result.run_id)
    assert [row["epoch"] for row in table] == [1, 2]
    assert len(warnings) == 1 and warnings[0]["source"] == "data"
    assert str(victim) in warnings[0]["message"] and "skipped" in warnings[0]["message"]


def test_a_run_fails_with_a_sentence_when_more_data_vanishes_than_allowed(db, tiny_config, tmp_path):
    config = tiny_config.with_overrides(cache_images=False, epochs=3, max_bad_fraction=0.0)
    data = prepare_dataset(config)
    victim = data.train[0].path
    try:
        result = train_and_record(config, db, data=data, sinks=[DeleteAfterEpochOne(victim)], work_dir=tmp_path)
    finally:
        _restore(victim)
    assert result.status == "failed"
    assert "became unreadable during training" in result.error and "max_bad_fraction" in result.error
    assert "Traceback" not in result.error
    with db.begin() as session:
        run = get_run(session, result.run_id)
        table = epoch_table(session, result.run_id)
    assert run.status == "failed" and victim.name in (run.error_message or "")
    assert [row["epoch"] for row in table] == [1]  # the completed epoch is kept


def _restore(path):
    import numpy as np
    from PIL import Image

    from tests.imaging import xray  # the fixture dataset is shared: put an image back

    if not path.exists():
        Image.fromarray(xray(np.random.default_rng(1), "pneumonia" in path.name.lower(), 32)).save(path)


def test_early_stopping_fires_with_an_event_and_a_reason(tiny_config):
    # The tiny set is easy: validation recall reaches its ceiling of 1.0 within a few epochs and cannot improve
    # strictly after that, so early stopping must fire well before epoch 12.
    config = tiny_config.with_overrides(epochs=12, early_stopping_patience=2, monitor="val_recall")
    events = ListSink()
    result = run_training(config, prepare_dataset(config), events)
    stops = events.of_type(EarlyStopping)
    assert result.status == "completed" and result.epochs_completed < 10
    assert len(stops) == 1 and stops[0].patience == 2 and "val_recall" in stops[0].reason
    epochs = [e.epoch for e in events.of_type(EpochEnd)]
    assert stops[0].epoch == epochs[-1]
    assert events.events.index(stops[0]) > events.events.index(events.of_type(EpochEnd)[-1])


def test_an_epoch_that_calls_every_image_pneumonia_never_wins_the_checkpoint(tiny_config, tmp_path, monkeypatch):
    """Epoch 1 is forced to call every validation image pneumonia: recall 1.0, the best a recall monitor sees."""
    from core.model.module import PneumoniaClassifier
    from core.training import runner

    class FirstEpochSaysPneumonia(PneumoniaClassifier):
        def forward(self, images):
            logits = super().forward(images)
            return logits + 50.0 if not self.training and self.current_epoch == 0 else logits

    monkeypatch.setattr(runner, "PneumoniaClassifier", FirstEpochSaysPneumonia)
    events = ListSink()
    config = tiny_config.with_overrides(epochs=3, monitor="val_recall", backbone="resnet18")  # one that learns
    result = run_training(config, prepare_dataset(config), events, work_dir=tmp_path)
    epochs = {e.epoch: e.metrics for e in events.of_type(EpochEnd)}
    assert epochs[1]["val_recall"] == 1.0 and epochs[1]["val_specificity"] == 0.0
    assert result.best_epoch != 1 and result.final_stats["degenerate"] is False
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == result.best_epoch
