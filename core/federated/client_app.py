"""The Flower ClientApp: one site's training round, run by the site's SuperNode in a fresh process per round.

One message per round: the site evaluates the received global model on its validation images (cross-site
evaluation) and trains from it, and replies with both. Only weights and aggregate numbers leave the site. A
failure is reported to the server as one generic line; the full message (which may name local files) stays in
the site's log and database.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from core.broadcast.producer import producer_from_env
from core.errors import PneumoFLError
from core.federated.settings import UNIFORM_KEY, FederationConfig, SiteSettings
from core.federated.site import RoundInput, train_site_round

log = logging.getLogger(__name__)
CLIPPING_NORM_KEY = "clipping_norm"  # flwr.supercore.differential_privacy.KEY_CLIPPING_NORM


def client_side_clipping(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``adaptiveclipping_mod``, for the rounds whose server asked for client-side clipping."""
    config = msg.content.config_records.get("config")
    if config is None or CLIPPING_NORM_KEY not in config:
        return call_next(msg, context)
    from flwr.clientapp.mod import adaptiveclipping_mod

    return adaptiveclipping_mod(msg, context, call_next)


app = ClientApp(mods=[client_side_clipping])


class SiteRoundFailed(RuntimeError):
    """What the server is told when a site cannot train: no path, file name or patient detail."""


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Evaluate the received global model and train it on this site's data for the configured local epochs."""
    config = msg.content["config"]
    server_round = int(config["server-round"])
    try:
        plan = FederationConfig.from_run_config(context.run_config)
        site = SiteSettings.from_node_config(context.node_config)
        producer = producer_from_env()
        received = RoundInput(
            server_round=server_round,
            weights=msg.content["arrays"].to_torch_state_dict(),
            proximal_mu=float(config.get("proximal-mu", 0.0)),  # FedProx sends it
        )
        try:
            result = train_site_round(plan, site, str(context.run_id), received, sinks=(producer,) if producer else ())
        finally:
            if producer is not None:
                producer.close()
    except PneumoFLError as exc:
        log.error("round %s could not start at this site: %s", server_round, exc)
        raise SiteRoundFailed(
            f"{type(exc).__name__}: the site's data or settings need attention (see its log)"
        ) from None
    except Exception:
        log.exception("round %s failed at this site", server_round)
        raise SiteRoundFailed("local training failed (see the site's log)") from None
    metrics = {"num-examples": result.num_examples, **result.metrics}
    if plan.private:
        metrics[UNIFORM_KEY] = 1  # every site counts the same under differential privacy
    reply = RecordDict(
        {
            "arrays": ArrayRecord(result.weights),
            "metrics": MetricRecord(metrics),
            "site": ConfigRecord({"site-name": site.site_name}),
        }
    )
    return Message(content=reply, reply_to=msg)
