"""Instrumentation overhead: a bare Lightning fit vs a full PneumoFL run, alternated in one process.

Both train the same model on the same demo data for the same epochs. The bare run has no callbacks, no logger,
no checkpointing and no sinks; the full run has every callback, the database sink (SQLite), the file sink and a
console-less in-memory listener, exactly as `pneumofl train` records a run.

Usage: .venv/bin/python tests/bench/overhead.py [--epochs 3] [--repeats 2]
Last line: JSON with both fit times, ratio (full fit / bare fit: the cost of every callback and sink), the full
run's end-to-end time (run row, final best-checkpoint evaluation on val+test) and its ratio, peak RSS of each and
the full run's RSS growth over epochs.
Targets: ratio <= 1.05; RSS growth over epochs small (bounded write-behind buffer) and within 200 MB of bare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytorch_lightning as pl

from core.config import demo_config
from core.data.prepare import prepare_dataset
from core.events import EpochEnd
from core.model.module import PneumoniaClassifier
from core.persistence import Database
from core.sinks import EventSink
from core.training.recorded import train_and_record
from core.training.runner import build_loaders, positive_weight

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class PeakRss:
    """Samples RSS every 20 ms in a thread; ``peak`` is the largest seen while active."""

    def __enter__(self) -> PeakRss:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class EpochRss(EventSink):
    name = "rss"

    def __init__(self) -> None:
        self.by_epoch: list[float] = []

    def handle(self, event: object) -> None:
        if isinstance(event, EpochEnd):
            self.by_epoch.append(rss_mb())


def bare_fit(config, data) -> float:
    pl.seed_everything(config.seed, verbose=False)
    loaders = build_loaders(config, data)
    model = PneumoniaClassifier(
        backbone=config.backbone,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        pos_weight=positive_weight(data),
        threshold=config.threshold,
    )
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=config.gradient_clip or None,
    )
    started = time.perf_counter()
    trainer.fit(model, loaders.train, loaders.val)
    return time.perf_counter() - started


def full_run(config, data, tmp: Path, index: int) -> tuple[float, float, list[float]]:
    db = Database.open(f"sqlite:///{tmp}/overhead-{index}.db")
    rss = EpochRss()
    from core.persistence.file_sink import FileSink

    files = FileSink(tmp / f"export-{index}")
    started = time.perf_counter()
    result = train_and_record(config, db, sinks=[rss, files], data=data, work_dir=tmp / f"ckpt-{index}")
    elapsed = time.perf_counter() - started
    db.close()
    assert result.status == "completed", result.error
    return result.fit_seconds, elapsed, rss.by_epoch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    # Early stopping off so both runs train the same number of epochs.
    config = demo_config(epochs=args.epochs, early_stopping_patience=0, accelerator="cpu")
    data = prepare_dataset(config)
    build_loaders(config, data)  # warm the image cache path once (each run builds its own datasets)
    bare_times, full_times, total_times, growth = [], [], [], []
    bare_peak = full_peak = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            with PeakRss() as peak:
                bare_times.append(bare_fit(config, data))
            bare_peak = max(bare_peak, peak.peak)
            with PeakRss() as peak:
                fit_s, elapsed, by_epoch = full_run(config, data, Path(tmp), i)
            full_times.append(fit_s)
            total_times.append(elapsed)
            full_peak = max(full_peak, peak.peak)
            growth.append(by_epoch[-1] - by_epoch[0] if len(by_epoch) > 1 else 0.0)
            print(
                f"repeat {i + 1}: bare fit {bare_times[-1]:.2f}s  full fit {fit_s:.2f}s  full run {elapsed:.2f}s  "
                f"rss by epoch {by_epoch}"
            )
    bare, full = statistics.median(bare_times), statistics.median(full_times)
    total = statistics.median(total_times)
    print(
        json.dumps(
            {
                "epochs": args.epochs,
                "repeats": args.repeats,
                "bare_s": round(bare, 3),
                "full_s": round(full, 3),
                "ratio": round(full / bare, 4),
                "full_run_s": round(total, 3),
                "ratio_with_setup_and_final_eval": round(total / bare, 4),
                "bare_peak_rss_mb": round(bare_peak, 1),
                "full_peak_rss_mb": round(full_peak, 1),
                "full_rss_growth_over_epochs_mb": round(max(growth), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
