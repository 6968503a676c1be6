"""What a site's warm worker (:mod:`core.federated.site_worker`) does with one round: the site's part of it.

Imported once per worker, so torch, Lightning and the training code stay loaded between rounds, and the site's
checked dataset stays decoded in memory for the whole Flower run (a federation trains on the data as it was
checked at its first round; the next federation checks it again).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import torch

from core.broadcast.producer import producer_from_env
from core.data import PreparedDataset
from core.errors import PneumoFLError
from core.federated.settings import FederationConfig, SiteSettings
from core.federated.site import RoundInput, train_site_round
from core.federated.site_data import prepare_site_data, site_training_config

log = logging.getLogger(__name__)


class RoundRunner:
    """Runs rounds for one site, keeping its prepared data per Flower run.

    Parameters
    ----------
    start_seconds
        How long the worker took from being started to being ready; reported with its first round.
    """

    def __init__(self, start_seconds: float | None = None) -> None:
        self.start_seconds = start_seconds
        self._data: tuple[tuple[int, str], PreparedDataset] | None = None
        self._fingerprint: dict[str, Any] | None = None  # of the prepared data's training split

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Train one round; ``{"weights", "num_examples", "metrics", "fingerprint"}`` or ``{"error", "message"}``.

        ``fingerprint`` is the training split's (None when the site's policy keeps it at the site).

        ``request`` holds ``run_config``, ``flower_run_id``, ``server_round``, ``weights`` (numpy, by name) and
        ``proximal_mu``. Errors are logged here in full; what goes back names no file or patient.
        """
        started = time.monotonic()
        server_round = int(request.get("server_round", 0))
        try:
            plan = FederationConfig.from_run_config(request["run_config"])
            site = SiteSettings.from_env()
            data = self._prepared(plan, site, int(request["flower_run_id"]))
            state, num_examples, metrics = run_round(plan, site, request, data)
            fingerprint = self._fingerprint_of(data, site)
        except PneumoFLError as exc:
            log.error("round %s could not start at this site: %s", server_round, exc)
            return {"error": "data", "message": f"{type(exc).__name__}: the site's data or settings need attention"}
        except Exception:
            log.exception("round %s failed at this site", server_round)
            return {"error": "failed", "message": "local training failed"}
        if self.start_seconds is not None:  # the worker's start-up, reported once (its first round)
            metrics["worker_start_seconds"] = self.start_seconds
            self.start_seconds = None
        log.info("round %s done in %.1f s", server_round, time.monotonic() - started)
        return {"weights": state, "num_examples": num_examples, "metrics": metrics, "fingerprint": fingerprint}

    def _prepared(self, plan: FederationConfig, site: SiteSettings, flower_run_id: int) -> PreparedDataset:
        config = site_training_config(plan, site).validate()
        key = (flower_run_id, json.dumps(config.to_dict(), sort_keys=True))
        if self._data is None or self._data[0] != key:
            self._data = (key, prepare_site_data(config, site))
            self._fingerprint = None
        return self._data[1]

    def _fingerprint_of(self, data: PreparedDataset, site: SiteSettings) -> dict[str, Any] | None:
        """The training split's fingerprint, once per prepared dataset, if the site's policy lets it leave."""
        from core.federated.site_consent import site_policy

        if not site_policy(site).send_data_fingerprint:
            return None
        if self._fingerprint is None:
            from core.data.fingerprint import data_fingerprint

            self._fingerprint = data_fingerprint([sample.path for sample in data.train])
        return self._fingerprint


def run_round(
    plan: FederationConfig, site: SiteSettings, request: dict[str, Any], data: PreparedDataset | None = None
) -> tuple[dict[str, np.ndarray], int, dict[str, float]]:
    """The site's part of one round, from a ClientApp's request: ``(weights, num_examples, metrics)``.

    ``request`` holds ``flower_run_id``, ``server_round``, ``weights`` (numpy, by name) and ``proximal_mu``; its
    arrays become the model's tensors without a copy where they are writable (unpickled ones are).
    """
    received = RoundInput(
        server_round=int(request["server_round"]),
        weights={name: torch.from_numpy(_writable(array)) for name, array in request.pop("weights").items()},
        proximal_mu=float(request.get("proximal_mu", 0.0)),
    )
    producer = producer_from_env()
    try:
        result = train_site_round(
            plan, site, int(request["flower_run_id"]), received, sinks=(producer,) if producer else (), data=data
        )
    finally:
        if producer is not None:
            producer.close()
    state = {name: tensor.detach().cpu().numpy() for name, tensor in result.weights.items()}
    return state, result.num_examples, dict(result.metrics)


def _writable(array: np.ndarray) -> np.ndarray:
    return array if array.flags.writeable else array.copy()
