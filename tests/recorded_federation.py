"""A federation server's run recorded through the real database sink, from the events a real federation emits:
three sites, two rounds, one site failing in round 2, differential privacy spent. For views that read it back
(the app's run viewer, the browser dashboard) without starting Flower."""

from __future__ import annotations

from core.events import ClientUpdate, RoundMetrics, RoundStart, TrainingEnd, TrainingStart
from core.persistence import Database, DatabaseSink
from core.persistence.runs import create_run

SITES = (("11", "north", 0.70), ("12", "south", 0.60))


# A server's operating points: chosen and measured on its held-out set, with no test split of its own.
SERVER_POINTS = {
    name: {"threshold": threshold, "val": {"recall": recall, "specificity": specificity}, "intervals": {}}
    for name, threshold, recall, specificity in (
        ("youden", 0.41, 0.9, 0.85),
        ("sens95", 0.22, 0.95, 0.7),
        ("spec95", 0.77, 0.6, 0.95),
    )
}


def record_federation(db: Database, name: str = "three hospitals") -> int:
    """Record the federation; return the server run's id."""
    with db.begin() as session:
        run_id = create_run(session, experiment_name=name, training_mode="federated", role="server", config={})
    sink = DatabaseSink(db, run_id)
    sink.handle(TrainingStart(run_id=run_id, experiment_name=name, training_mode="federated", role="server"))
    for number in (1, 2):
        sink.handle(RoundStart(run_id=run_id, round_number=number, num_clients=3))
        for node, site, auroc in SITES:
            metrics = {
                "train_loss": 0.5 / number,
                "global_val_auroc": auroc + 0.1 * number,
                "train_seconds": 2.0,
                "wait_seconds": 11.0,
                "round_trip_seconds": 13.0,
                "bytes_to_site": 410_000.0,
                "bytes_from_site": 409_000.0,
            }
            sink.handle(
                ClientUpdate(
                    run_id=run_id,
                    round_number=number,
                    client_id=node,
                    client_name=site,
                    num_examples=40,
                    metrics=metrics,
                )
            )
        if number == 2:
            sink.handle(
                ClientUpdate(
                    run_id=run_id,
                    round_number=2,
                    client_id="13",
                    client_name="east",
                    num_examples=0,
                    failed=True,
                    error="the site went offline during the round (its SuperNode stopped answering)",
                )
            )
        server = {"val_auroc": 0.8 + 0.05 * number, "dp_epsilon": 1.5 * number, "dp_delta": 1e-5}
        sink.handle(RoundMetrics(run_id=run_id, round_number=number, server_metrics=server))
    privacy = {
        "epsilon": 3.0,
        "delta": 1e-5,
        "releases": 2,
        "noise_multiplier": 1.0,
        "clipping": "fixed",
        "clipping_norm": 1.0,
        "accounting": "Renyi DP, Flower's RdpAccountant (no sampling amplification)",
    }
    sink.handle(TrainingEnd(run_id=run_id, status="completed", best_epoch=2, final_stats={"privacy": privacy, "operating_points": SERVER_POINTS}))
    sink.close()
    return run_id
