"""The Flower ClientApp: one site's training round, run by the site's SuperNode in a fresh process per round.

One message per round: the site evaluates the received global model on its validation images (cross-site
evaluation) and trains from it, and replies with both. Only weights and aggregate numbers leave the site. A
failure is reported to the server as one generic line; the full message (which may name local files) stays in
the site's log and database.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from core.errors import ConfigError, PneumoFLError
from core.federated.settings import FINGERPRINT_KEY, PLAN_KEY, UNIFORM_KEY, FederationConfig, SiteSettings

log = logging.getLogger(__name__)
CLIPPING_NORM_KEY = "clipping_norm"  # flwr.supercore.differential_privacy.KEY_CLIPPING_NORM
LOCAL_DP_DELTA = 1e-5


def client_side_clipping(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``adaptiveclipping_mod``, for the rounds whose server asked for client-side clipping."""
    config = msg.content.config_records.get("config")
    if config is None or CLIPPING_NORM_KEY not in config:
        return call_next(msg, context)
    from flwr.clientapp.mod import adaptiveclipping_mod

    return adaptiveclipping_mod(msg, context, call_next)


def site_local_dp(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Privacy the site adds itself when its policy asks (Flower's ``LocalDpMod``), whatever the server does.

    The policy gives a noise multiplier and a clipping norm; Flower's mod takes a Gaussian mechanism's epsilon
    and delta. The epsilon is chosen so that its noise is exactly multiplier x norm at ``LOCAL_DP_DELTA``.
    """
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    from core.federated.site_consent import site_policy

    policy = site_policy(SiteSettings.from_env())
    if not policy.local_dp:
        return call_next(msg, context)
    from flwr.clientapp.mod import LocalDpMod

    epsilon = math.sqrt(2 * math.log(1.25 / LOCAL_DP_DELTA)) / policy.local_dp_noise
    mod = LocalDpMod(policy.local_clip_norm, policy.local_clip_norm, epsilon, LOCAL_DP_DELTA)
    return mod(msg, context, call_next)


def audit_reply(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Audit what leaves the site after a round: the reply as every other mod left it (noise included)."""
    reply = call_next(msg, context)
    if msg.metadata.message_type == MessageType.TRAIN and not reply.has_error():
        from core.federated.site_consent import audit_round

        audit_round(
            SiteSettings.from_env(),
            FederationConfig.from_run_config(context.run_config),
            int(context.run_id),
            int(msg.content["config"]["server-round"]),
            reply.content["arrays"],
            sorted(reply.content["metrics"]),
        )
    return reply


# Outermost first: the audit sees the reply exactly as it leaves; local noise comes after any clipping.
app = ClientApp(mods=[audit_reply, site_local_dp, client_side_clipping])


class SiteRoundFailed(RuntimeError):
    """What the server is told when a site cannot train: no path, file name or patient detail."""


@app.query()
def plan(msg: Message, context: Context) -> Message:
    """Relay the federation's plan to the site node, which decides (its policy, then its consent) and audits."""
    from core.federated.consent_channel import ask_site_node

    asked = msg.content.config_records.get(PLAN_KEY) or ConfigRecord({})
    site_name = ""
    try:
        site = SiteSettings.from_env()
        site_name = site.site_name
        approved, reason = ask_site_node(
            Path(site.consent_dir),
            int(context.run_id),
            dict(context.run_config),
            float(asked.get("consent-timeout", 600.0)),
        )
    except PneumoFLError as exc:
        log.error("the plan could not be put to this site: %s", exc)
        approved, reason = False, "the site's settings need attention (see its log)"
    if not approved:
        log.warning("declined the plan of run %s: %s", context.run_id, reason)
    # The reason names the site's own limit; it says nothing about the site's data.
    answer = {"approved": approved, "reason": reason, "site-name": site_name}
    return Message(content=RecordDict({PLAN_KEY: ConfigRecord(answer)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Evaluate the received global model and train it on this site's data for the configured local epochs.

    This process only relays to the site node's warm worker: it imports neither torch nor Lightning.
    """
    from core.federated.site_consent import decision_for
    from core.federated.site_consent import site_policy as decision_policy
    from core.federated.wire import ARRAYS_KEY, WireError, layout_of, pack, unpack

    config = msg.content["config"]
    server_round = int(config["server-round"])
    try:
        plan = FederationConfig.from_run_config(context.run_config)
        site = SiteSettings.from_env()
        decision = decision_for(site, int(context.run_id), plan)
        if not decision.allowed:
            log.error("round %s refused: %s", server_round, decision.reason)
            raise SiteRoundFailed(f"declined by site policy: {decision.reason}")
        try:
            layout = layout_of(msg.content)
            if layout is None:
                raise WireError("the weights came one array per tensor; this site expects them packed")
            tensors = unpack(msg.content[ARRAYS_KEY], layout)
        except WireError as exc:
            log.error("round %s: the server's weights could not be read: %s", server_round, exc)
            raise SiteRoundFailed("the weights the server sent could not be read (see the site's log)") from None
        request = {
            "run_config": dict(context.run_config),
            "flower_run_id": int(context.run_id),
            "server_round": server_round,
            "weights": tensors,
            "proximal_mu": float(config.get("proximal-mu", 0.0)),  # FedProx sends it
        }
        if not site.worker_dir:
            raise ConfigError("this site node runs no training worker: start the site with `pneumofl site join`")
        state, num_examples, round_metrics, fingerprint = _train_on_worker(Path(site.worker_dir), request, plan)
    except SiteRoundFailed:
        raise
    except PneumoFLError as exc:
        log.error("round %s could not start at this site: %s", server_round, exc)
        raise SiteRoundFailed(
            f"{type(exc).__name__}: the site's data or settings need attention (see its log)"
        ) from None
    except Exception:
        log.exception("round %s failed at this site", server_round)
        raise SiteRoundFailed("local training failed (see the site's log)") from None
    metrics = {"num-examples": num_examples, **round_metrics}
    policy = decision_policy(site)
    if not policy.send_site_metrics:  # the steward keeps cross-site evaluation numbers at the site
        metrics = {name: value for name, value in metrics.items() if not name.startswith("global_val_")}
    if plan.private:
        metrics[UNIFORM_KEY] = 1  # every site counts the same under differential privacy
    # Packed as the server packed the round (same order and precision): Flower's DP mods compare the two.
    weights, sent = pack(state, layout.precision, layout.names)
    about = {"site-name": site.site_name, **sent.to_config()}
    if fingerprint and policy.send_data_fingerprint:  # coarse counts only (core.data.fingerprint), as allowed
        about[FINGERPRINT_KEY] = json.dumps(fingerprint, separators=(",", ":"))
    reply = RecordDict({ARRAYS_KEY: weights, "metrics": MetricRecord(metrics), "site": ConfigRecord(about)})
    return Message(content=reply, reply_to=msg)


Trained = tuple[dict[str, Any], int, dict[str, float], dict[str, Any] | None]


def _train_on_worker(folder: Path, request: dict[str, Any], plan: FederationConfig) -> Trained:
    """Hand the round to the site node's warm worker; a worker that is gone fails the round in a sentence."""
    from core.federated.site_worker import WorkerUnavailable, train_on_worker

    try:
        answer = train_on_worker(folder, request, timeout=plan.round_timeout)
    except WorkerUnavailable as exc:
        log.error("round %s: %s", request["server_round"], exc)
        raise SiteRoundFailed(
            "the site's training worker stopped or did not answer (the site starts it again for the next round)"
        ) from None
    if "error" in answer:  # the worker logged the details; its message names no file or patient
        raise SiteRoundFailed(f"{answer['message']} (see the site's log)")
    return dict(answer["weights"]), int(answer["num_examples"]), dict(answer["metrics"]), answer.get("fingerprint")
