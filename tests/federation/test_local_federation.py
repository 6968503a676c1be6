"""A real local federation: one SuperLink and two SuperNodes on 127.0.0.1, two rounds, recorded and streamed."""

from __future__ import annotations

from core.events import ClientUpdate, EpochEnd, RoundMetrics, RoundStart, TrainingEnd, TrainingStart
from core.federated.local import LocalFederation
from core.persistence import Database
from core.persistence.repository import federated_runs, get_metrics, list_clients, list_rounds
from tests.federation.conftest import tiny_plan


def test_two_sites_two_rounds_are_recorded_at_server_and_sites(postgres_server, fl_data, hub, no_orphans):
    # PostgreSQL, as a shared site would use; the fault, TLS and GUI federation tests record into SQLite.
    db_url = postgres_server.create_database()
    plan = tiny_plan()
    with LocalFederation(db_url, no_orphans, sites=2, data_path=str(fl_data), extra_env=hub.env) as federation:
        outcome = federation.run(plan)

    assert outcome.status == "completed", outcome.message
    assert outcome.outbound_bytes > 0 and outcome.inbound_bytes > 0
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            runs = federated_runs(s, str(outcome.flower_run_id))
            server, sites = runs[0], runs[1:]
            assert server.role == "server" and server.training_mode == "federated" and server.status == "completed"
            assert [r.role for r in sites] == ["client", "client"]
            assert sorted(r.experiment_name for r in sites) == ["fl-test · site-1", "fl-test · site-2"]
            assert all(r.status == "completed" and r.server_address == federation.server.fleet_address for r in sites)

            # Server: its sites, rounds 0..2 with the central evaluation, per-site fit metrics per round.
            clients = list_clients(s, server.id)
            assert sorted(name for _, name in clients) == ["site-1", "site-2"]
            rounds = list_rounds(s, server.id)
            assert [r["round_number"] for r in rounds] == [0, 1, 2]
            assert all("val_auroc" in r["server_metrics"] for r in rounds)
            assert all("train_loss" in r["aggregated_client_metrics"] for r in rounds[1:])
            per_site = get_metrics(s, server.id, context="aggregated")
            fit = {(m.client_id, m.round_id) for m in per_site if m.metric_name == "train_loss" and m.client_id}
            assert fit == {(cid, r) for cid, _ in clients for r in (1, 2)}
            evals = get_metrics(s, server.id, context="server_eval")
            assert {m.step for m in evals if m.metric_name == "val_recall"} == {0, 1, 2}
            assert server.best_epoch in (1, 2)  # the best round by server validation recall
            finals = {m.metric_name for m in get_metrics(s, server.id, context="final_epoch")}
            assert {"val_recall", "val_specificity", "val_cm_tp"} <= finals

            # Each site: epochs of both rounds, numbered on from round to round, tagged with the round.
            for site in sites:
                epochs = {
                    (m.step, m.round_id)
                    for m in get_metrics(s, site.id, context="epoch_end")
                    if m.metric_name == "train_loss"
                }
                assert epochs == {(1, 1), (2, 2)}
                batches = [m for m in get_metrics(s, site.id, context="batch") if m.metric_name == "train_loss"]
                steps = [m.step for m in batches]
                assert len(steps) == len(set(steps)), "batch steps collide across rounds"
    finally:
        db.close()

    # The same story arrived live at the hub.
    assert [e.round_number for e in hub.of_type(RoundStart)] == [1, 2]
    updates = hub.of_type(ClientUpdate)
    assert len(updates) == 4 and not any(u.failed for u in updates)
    assert {u.client_name for u in updates} == {"site-1", "site-2"}
    assert [e.round_number for e in hub.of_type(RoundMetrics)] == [0, 1, 2]
    starts = hub.of_type(TrainingStart)
    assert sorted(e.role for e in starts) == ["client", "client", "server"]
    assert {e.round_number for e in hub.of_type(EpochEnd)} == {1, 2}
    assert any(e.status == "completed" and e.run_id == server.id for e in hub.of_type(TrainingEnd))
