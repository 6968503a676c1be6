"""A federation as console lines: rounds, which site returned what and when, and the server's evaluation."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from core.events import ClientUpdate, EpochEnd, Event, RoundMetrics, RoundStart, RunError, TrainingEnd, TrainingStart
from core.sinks import EventSink


class FederationConsole(EventSink):
    """Prints the server's round events and, with ``sites=True``, each site's epoch summaries."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, sites: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.sites = sites
        self.server_runs: set[int] = set()
        self._round_started: dict[int, float] = {}

    def _say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def handle(self, event: Event) -> None:
        """Print what a person following the federation wants to see."""
        if isinstance(event, TrainingStart):
            if event.role == "server":
                self.server_runs.add(event.run_id or 0)
                self._say(
                    f"Federation '{event.experiment_name}' started (run {event.run_id}), {event.total_epochs} rounds."
                )
            else:
                self._say(f"Site run {event.run_id} '{event.experiment_name}' started.")
        elif isinstance(event, RoundStart):
            self._round_started[event.round_number or 0] = event.timestamp
            self._say(f"Round {event.round_number}: global model sent to {event.num_clients} site(s).")
        elif isinstance(event, ClientUpdate):
            name = event.client_name or event.client_id
            waited = event.timestamp - self._round_started.get(event.round_number or 0, event.timestamp)
            if event.failed:
                self._say(f"  {name} FAILED after {waited:.0f} s: {event.error}")
            else:
                m = event.metrics
                waited = m.get("round_trip_seconds", waited)
                extras = []
                if "train_seconds" in m:
                    extras.append(f"trained {m['train_seconds']:.0f} s")
                if "bytes_from_site" in m:
                    extras.append(f"{m['bytes_from_site'] / 1e6:.1f} MB")
                note = f" ({', '.join(extras)})" if extras else ""
                here = f", global model's AUROC here {m['global_val_auroc']:.3f}" if "global_val_auroc" in m else ""
                self._say(
                    f"  {name} sent its update ({event.num_examples} images) after {waited:.0f} s{note}: "
                    f"{_brief(m)}{here}"
                )
        elif isinstance(event, RoundMetrics):
            label = "initial model" if event.round_number == 0 else f"Round {event.round_number}"
            privacy = event.server_metrics.get("dp_epsilon")
            spent = (
                f"; privacy spent epsilon {privacy:.2f} at delta {event.server_metrics.get('dp_delta')}"
                if privacy
                else ""
            )
            self._say(f"{label}: server evaluation {_brief(event.server_metrics) or '(no evaluation set)'}{spent}")
        elif isinstance(event, EpochEnd) and self.sites and event.run_id not in self.server_runs:
            self._say(
                f"  site run {event.run_id}, round {event.round_number}, epoch {event.epoch}: {_brief(event.metrics)}"
            )
        elif isinstance(event, RunError) and event.run_id in self.server_runs:
            self._say(f"Error: {event.message}")
        elif isinstance(event, TrainingEnd) and (event.run_id in self.server_runs or self.sites):
            who = "Federation" if event.run_id in self.server_runs else f"Site run {event.run_id}"
            self._say(f"{who} {event.status} in {event.duration:.0f} s.")


def _brief(metrics: dict[str, float]) -> str:
    """The few numbers a clinician reads: loss, AUROC, sensitivity, specificity."""
    names = (
        ("train_loss", "train loss"),
        ("val_loss", "val loss"),
        ("val_auroc", "AUROC"),
        ("val_recall", "sensitivity"),
        ("val_specificity", "specificity"),
    )
    return ", ".join(f"{label} {metrics[key]:.3f}" for key, label in names if key in metrics)
