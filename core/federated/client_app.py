"""The Flower ClientApp: one site's training round, run by the site's SuperNode in a fresh process per round.

Only weights and aggregate numbers leave the site. A failure is reported to the server as one generic line;
the full message (which may name local files) stays in the site's log and database.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from core.broadcast.producer import producer_from_env
from core.errors import PneumoFLError
from core.federated.settings import FederationConfig, SiteSettings
from core.federated.site import train_site_round

log = logging.getLogger(__name__)
app = ClientApp()


class SiteRoundFailed(RuntimeError):
    """What the server is told when a site cannot train: no path, file name or patient detail."""


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this site's data for the configured local epochs."""
    server_round = int(msg.content["config"]["server-round"])
    try:
        plan = FederationConfig.from_run_config(context.run_config)
        site = SiteSettings.from_node_config(context.node_config)
        producer = producer_from_env()
        try:
            result = train_site_round(
                plan,
                site,
                str(context.run_id),
                server_round,
                msg.content["arrays"].to_torch_state_dict(),
                sinks=(producer,) if producer else (),
            )
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
    reply = RecordDict(
        {
            "arrays": ArrayRecord(result.weights),
            "metrics": MetricRecord({"num-examples": result.num_examples, **result.metrics}),
            "site": ConfigRecord({"site-name": site.site_name}),
        }
    )
    return Message(content=reply, reply_to=msg)
