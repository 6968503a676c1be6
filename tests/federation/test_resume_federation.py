"""A federation whose server's Flower processes are SIGKILLed after round 1 of 3 fails with a sentence, then
continues, in the same server run and the same sites' runs, once the server starts again with the run to resume:
one curve, no duplicate round, and the privacy ledger carried on (3 releases, not 2)."""

from __future__ import annotations

import dataclasses
import threading
import time

from core.federated.local import LocalFederation
from core.federated.nodes import ServerNode
from core.persistence import Database
from core.persistence.artifacts import list_artifacts
from core.persistence.federation_records import federated_runs, list_rounds
from core.persistence.metric_reads import get_metrics
from core.persistence.runs import get_run, list_runs
from tests.federation.conftest import processes_under, tiny_plan


def _server_rounds(db_url: str) -> tuple[int | None, list[int], set[str]]:
    with Database.open(db_url, migrate=False) as db, db.begin() as s:
        servers = [r for r in list_runs(s, sort_by="id", descending=False) if r.role == "server"]
        if not servers:
            return None, [], set()
        run_id = servers[0].id
        kinds = {a.kind for a in list_artifacts(s, run_id)}
        return run_id, [r["round_number"] for r in list_rounds(s, run_id)], kinds


def test_a_killed_server_continues_its_federation_at_the_next_round(tmp_path, fl_data):
    db_url = f"sqlite:///{tmp_path / 'fl.db'}"
    work = tmp_path / "fl-work"
    federation = LocalFederation(db_url, work, sites=2, data_path=str(fl_data), state_file=work / "superlink.db")
    plan = tiny_plan(name="fl-resume", rounds=3, dp_noise=2.5, dp_clipping="fixed", round_timeout=120.0)
    try:
        federation.start()
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(outcome=federation.run(plan)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run_id, rounds, kinds = _server_rounds(db_url)
            if 1 in rounds and "server_state" in kinds:
                break
            time.sleep(0.2)
        assert run_id is not None and 1 in rounds, "round 1 never ended"
        server = federation.server
        assert server is not None
        for proc in processes_under(work / "server"):  # the SuperLink and the ServerApp, as a crash would
            proc.kill()
        server.stop()

        # The server starts again (same port, same SuperLink state): the sites reconnect by themselves.
        settings = dataclasses.replace(server.settings, resume_run_id=run_id)
        federation.server = ServerNode(settings, work / "server", port=server.port, state_file=work / "superlink.db")
        federation.server.start()
        for node in federation.sites:
            federation.server.approve(node.approval)
        thread.join(timeout=120)
        # The SuperLink dying failed the run, in a sentence, at the server and its sites.
        assert first["outcome"].status == "failed" and "SuperLink stopped unexpectedly" in first["outcome"].message
        with Database.open(db_url, migrate=False) as db, db.begin() as s:
            before = federated_runs(s, first["outcome"].flower_run_id)
        assert before[0].id == run_id and len(before) == 3
        assert all(r.status in ("failed", "interrupted") for r in before), [(r.role, r.status) for r in before]
        outcome = federation.run(plan.with_changes(continues=str(first["outcome"].flower_run_id)))
        assert outcome.status == "completed", outcome.message

        with Database.open(db_url, migrate=False) as db, db.begin() as s:
            after = federated_runs(s, outcome.flower_run_id)
            run = get_run(s, run_id)
            rounds = list_rounds(s, run_id)
            evaluations = [m.step for m in get_metrics(s, run_id, context="server_eval") if m.metric_name == "val_recall"]
            site_epochs = {
                site.id: sorted(
                    m.round_number
                    for m in get_metrics(s, site.id, context="epoch_end")
                    if m.metric_name == "train_loss"
                )
                for site in after[1:]
            }
        # One server run and the same two site runs, now linked to both Flower runs.
        assert [r.id for r in after] == [r.id for r in before]
        assert run.status == "completed" and len(run.resumes) == 1 and run.resumes[0]["from_round"] >= 1
        assert [r["round_number"] for r in rounds] == [0, 1, 2, 3]  # one curve, no round twice
        assert sorted(evaluations) == [0, 1, 2, 3]
        assert all(epochs == [1, 2, 3] for epochs in site_epochs.values()), site_epochs
        assert run.final_stats["privacy"]["releases"] == 3, "the privacy ledger continued, not from zero"
        assert all(r.status == "completed" for r in after[1:])
    finally:
        federation.stop()
        left = processes_under(work)
        for proc in left:
            proc.kill()
        assert not left, "Flower processes outlived the federation"
