"""One real local federation (a SuperLink and two SuperNodes on 127.0.0.1, recording into PostgreSQL) running
several plans in turn: a differentially private FedProx (Flower's client-side adaptive clipping) recorded at the
server and the sites, FedAdam, and a round waiting for sites that never come. (Flower's server-side fixed clipping
is checked without processes, in tests/core/federated.) Sharing
the processes keeps each plan to its rounds (each round here starts a fresh ClientApp process per site)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
import torch

from core.events import ClientUpdate, EpochEnd, RoundMetrics, RoundStart, TrainingEnd, TrainingStart
from core.federated.local import LocalFederation
from core.federated.nodes import FederationOutcome
from core.federated.server_state import ServerState
from core.federated.settings import FederationConfig
from core.persistence import Database
from core.persistence.artifacts import artifact_bytes
from core.persistence.federation import load_federation
from core.persistence.federation_records import federated_runs, list_rounds, list_sites
from core.persistence.metric_reads import get_metrics, run_report
from tests.federation.conftest import HubThread, processes_under, tiny_plan


@dataclass
class Shared:
    federation: LocalFederation
    db_url: str
    hub: HubThread

    def run(self, plan: FederationConfig) -> FederationOutcome:
        self.hub.events.clear()
        outcome = self.federation.run(plan)
        assert outcome.status == "completed", outcome.message
        return outcome

    def records(self, outcome: FederationOutcome):
        db = Database.open(self.db_url)
        try:
            with db.begin() as s:
                runs = federated_runs(s, outcome.flower_run_id)
                return runs, load_federation(s, runs[0].id)
        finally:
            db.close()


@pytest.fixture(scope="module")
def shared(postgres_server, fl_data, tmp_path_factory) -> Iterator[Shared]:
    # PostgreSQL, as a shared site would use; the fault, TLS and GUI federation tests record into SQLite.
    db_url = postgres_server.create_database()
    work = tmp_path_factory.mktemp("shared-federation")
    with HubThread() as hub:
        federation = LocalFederation(db_url, work, sites=2, data_path=str(fl_data), extra_env=hub.env)
        try:
            federation.start()
            yield Shared(federation, db_url, hub)
        finally:
            federation.stop()
            left = processes_under(work)
            for proc in left:
                proc.kill()
            assert not left, "Flower processes outlived the federation"


def test_two_sites_two_rounds_are_recorded_at_server_and_sites(shared):
    # FedProx, differentially private with Flower's adaptiveclipping_mod at the sites: the privacy spent is part
    # of the record.
    plan = tiny_plan(strategy="fedprox", dp_noise=0.8, dp_clipping="adaptive")
    outcome = shared.run(plan)
    assert outcome.outbound_bytes > 0 and outcome.inbound_bytes > 0
    db = Database.open(shared.db_url)
    try:
        with db.begin() as s:
            runs = federated_runs(s, outcome.flower_run_id)
            server, sites = runs[0], runs[1:]
            assert server.role == "server" and server.training_mode == "federated" and server.status == "completed"
            assert server.config["strategy"] == "fedprox"
            assert server.config["proximal_mu"] == 0.01  # the default mu, recorded as used
            assert [r.role for r in sites] == ["site", "site"]
            assert sorted(r.experiment_name for r in sites) == ["fl-test · site-1", "fl-test · site-2"]
            address = shared.federation.server.fleet_address
            assert all(r.status == "completed" and r.server_address == address for r in sites)

            # Server: its sites, rounds 0..2 with the central evaluation, per-site fit metrics per round.
            sites_seen = list_sites(s, server.id)
            assert sorted(name for _, name in sites_seen) == ["site-1", "site-2"]
            rounds = list_rounds(s, server.id)
            assert [r["round_number"] for r in rounds] == [0, 1, 2]
            assert all("val_auroc" in r["server_metrics"] for r in rounds)
            spent = [r["server_metrics"]["dp_epsilon"] for r in rounds[1:]]
            assert all(math.isfinite(e) and e > 0 for e in spent) and spent[1] > spent[0], "epsilon grows per release"
            privacy = server.final_stats["privacy"]
            assert privacy["epsilon"] == pytest.approx(spent[-1]) and privacy["delta"] == plan.dp_delta
            assert privacy["clipping"] == "adaptive" and privacy["releases"] == 2
            assert all("train_loss" in r["aggregated_site_metrics"] for r in rounds[1:])
            per_site = get_metrics(s, server.id, context="aggregated")
            fit = {(m.site_id, m.round_number) for m in per_site if m.metric_name == "train_loss" and m.site_id}
            assert fit == {(cid, r) for cid, _ in sites_seen for r in (1, 2)}
            evals = get_metrics(s, server.id, context="server_eval")
            assert {m.step for m in evals if m.metric_name == "val_recall"} == {0, 1, 2}
            assert server.best_epoch in (1, 2)  # the best round by the server's evaluation
            finals = run_report(s, server.id).metrics("val").values
            assert {"recall", "specificity", "cm_tp"} <= set(finals)

            # Each site: epochs of both rounds, numbered on from round to round, tagged with the round.
            for site in sites:
                epochs = {
                    (m.step, m.round_number)
                    for m in get_metrics(s, site.id, context="epoch_end")
                    if m.metric_name == "train_loss"
                }
                assert epochs == {(1, 1), (2, 2)}
                batches = [m for m in get_metrics(s, site.id, context="batch") if m.metric_name == "train_loss"]
                steps = [m.step for m in batches]
                assert len(steps) == len(set(steps)), "batch steps collide across rounds"
            history = load_federation(s, server.id)
            # What a restarted server would continue from: the state after the last round, kept with the run.
            state = ServerState.from_bytes(artifact_bytes(s, server.id, "server_state"))
            best_weights = artifact_bytes(s, server.id, "best")
    finally:
        db.close()
    assert state.round_number == 2 and state.best["round"] == server.best_epoch
    assert sum(c["count"] for c in state.accountant["compositions"]) == 2, "the privacy ledger: both releases"
    assert state.strategy[0]["clipping_norm"] > 0  # the adaptive clipping norm as it was after round 2
    assert best_weights is not None
    # The federation's training data: the sum of what each site's policy let it say of its own (the defaults do).
    fingerprint = server.final_stats["data_fingerprint"]
    trained = sum(r.num_examples for r in history.replies if r.round_number == 1)
    assert fingerprint["sites"] == ["site-1", "site-2"] and fingerprint["images"] == trained
    assert fingerprint["counts"]["modality"] == {"unknown": trained}  # PNG folders carry no DICOM fields

    # Cross-site evaluation and who returned what when: a row per site per round, with traffic and time.
    assert sorted((r.round_number, r.site_name) for r in history.replies) == [
        (1, "site-1"),
        (1, "site-2"),
        (2, "site-1"),
        (2, "site-2"),
    ]
    for reply in history.replies:
        m = reply.metrics
        assert not reply.failed and reply.num_examples > 0
        assert {"global_val_loss", "global_val_sensitivity", "global_val_specificity"} <= set(m)
        assert m["bytes_to_site"] > 100_000 and m["bytes_from_site"] > 100_000  # small_cnn: about 0.4 MB
        assert 0 < m["train_seconds"] < m["round_trip_seconds"]
        assert m["wait_seconds"] >= 0

    # The same story arrived live at the hub.
    hub = shared.hub
    assert [e.round_number for e in hub.of_type(RoundStart)] == [1, 2]
    updates = hub.of_type(ClientUpdate)
    assert len(updates) == 4 and not any(u.failed for u in updates)
    assert {u.client_name for u in updates} == {"site-1", "site-2"}
    assert [e.round_number for e in hub.of_type(RoundMetrics)] == [0, 1, 2]
    starts = hub.of_type(TrainingStart)
    assert sorted(e.role for e in starts) == ["server", "site", "site"]
    assert {e.round_number for e in hub.of_type(EpochEnd)} == {1, 2}
    assert any(e.status == "completed" and e.run_id == server.id for e in hub.of_type(TrainingEnd))


def test_fedadam_at_half_precision_after_a_worker_was_killed(shared):
    # A site's warm worker killed between federations (as the OOM killer would): the next round waits for the
    # one its node starts again instead of failing.
    worker = shared.federation.sites[0].worker
    assert worker is not None and worker.process is not None
    killed = worker.process.popen.pid
    psutil.Process(killed).kill()
    # A server optimizer (BatchNorm statistics stay at the sites), weights sent as float16.
    plan = tiny_plan(name="fl-fedadam", rounds=1, strategy="fedadam", wire_precision="fp16")
    runs, history = shared.records(shared.run(plan))
    server = runs[0]
    assert server.status == "completed" and server.config["strategy"] == "fedadam"
    assert server.config["wire_precision"] == "fp16"
    evaluations = [r["server_metrics"] for r in history.rounds if r["round_number"] > 0]
    assert len(evaluations) == 1 and math.isfinite(evaluations[0]["val_auroc"])
    assert len(history.replies) == 2 and not any(r.failed for r in history.replies)
    assert all(r.status == "completed" for r in runs[1:])
    assert worker.restarts == 1 and worker.process.popen.pid != killed
    for reply in history.replies:  # small_cnn: about 0.4 MB at float32
        assert 100_000 < reply.metrics["bytes_from_site"] < 300_000
        assert reply.metrics["worker_rss_mb"] > 50
    # The site whose worker was started again reports its start-up with its first round.
    assert sum("worker_start_seconds" in r.metrics for r in history.replies) >= 1
    kept = torch.load(server.final_stats["model"]["checkpoint"], map_location="cpu", weights_only=True)
    weights = kept.get("state_dict", kept)
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point()), "aggregated in fp32"


def test_round_waiting_for_missing_sites_ends_at_the_timeout(shared):
    outcome = shared.federation.run(tiny_plan(name="fl-too-few", min_sites=3, round_timeout=4.0))
    assert outcome.status == "failed"
    assert "timed out after 4 s: 2 of the 3 sites needed were online" in outcome.message
    runs, _ = shared.records(outcome)
    assert runs[0].role == "server" and runs[0].status == "failed" and "timed out" in (runs[0].error_message or "")
