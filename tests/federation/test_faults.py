"""Faults with real Flower processes: missing sites, a site killed mid-round, the SuperLink dying."""

from __future__ import annotations

import time

from core.events import ClientUpdate, RoundStart, TrainingStart
from core.federated.local import LocalFederation
from core.federated.nodes import SiteNode
from core.persistence import Database
from core.persistence.repository import federated_runs
from tests.federation.conftest import tiny_plan


def wait_for(condition, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def runs_of(db_url: str, flower_run_id: int):
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            return federated_runs(s, str(flower_run_id))
    finally:
        db.close()


def test_round_waiting_for_missing_sites_ends_at_the_timeout(tmp_path, fl_data, hub, no_orphans):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    plan = tiny_plan(min_sites=3, round_timeout=4.0)
    with LocalFederation(db_url, no_orphans, sites=2, data_path=str(fl_data), extra_env=hub.env) as federation:
        outcome = federation.run(plan)

    assert outcome.status == "failed"
    assert "timed out after 4 s: 2 of the 3 sites needed were online" in outcome.message
    server = runs_of(db_url, outcome.flower_run_id)[0]
    assert server.role == "server" and server.status == "failed"
    assert "timed out" in (server.error_message or "")


def test_killed_site_fails_its_round_alone_and_can_rejoin(tmp_path, fl_data, hub, no_orphans):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    plan = tiny_plan(min_sites=2, round_timeout=30.0)
    with LocalFederation(db_url, no_orphans, sites=3, data_path=str(fl_data), extra_env=hub.env) as federation:
        victim = federation.sites[2]
        result: dict = {}

        import threading

        runner = threading.Thread(target=lambda: result.setdefault("outcome", federation.run(plan)))
        runner.start()
        try:
            # Kill site-3 while it trains round 1 (its run has started: its ClientApp is running).
            wait_for(
                lambda: any(e.experiment_name.endswith("site-3") for e in hub.of_type(TrainingStart)), what="site-3"
            )
            victim.kill()
            wait_for(
                lambda: any(e.round_number == 2 for e in hub.of_type(RoundStart)) or not runner.is_alive(),
                what="round 2",
            )
            # The site comes back (same settings, same database): it takes part again.
            rejoined = SiteNode(victim.site, victim.superlink_address, no_orphans / "site-3-again", extra_env=hub.env)
            federation.sites.append(rejoined)
            rejoined.start()
        finally:
            runner.join(240)
    outcome = result["outcome"]

    assert outcome.status == "completed", outcome.message
    updates = hub.of_type(ClientUpdate)
    round1 = [u for u in updates if u.round_number == 1]
    assert sorted((u.client_name, u.failed) for u in round1 if not u.failed) == [("site-1", False), ("site-2", False)]
    failed = [u for u in round1 if u.failed]
    assert len(failed) == 1 and failed[0].error, "the killed site's failure is shown against it"
    assert failed[0].client_name in ("site-3", failed[0].client_id)
    # Rejoining: the site's later rounds are not failures; when it was back in time it trained again.
    later = [u for u in updates if (u.round_number or 0) >= 2 and u.client_name == "site-3"]
    assert all(not u.failed for u in later)
    runs = runs_of(db_url, outcome.flower_run_id)
    assert runs[0].status == "completed"
    assert sorted(r.experiment_name for r in runs[1:]) == ["fl-test · site-1", "fl-test · site-2", "fl-test · site-3"]


def test_superlink_dying_fails_the_run(tmp_path, fl_data, hub, no_orphans):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    plan = tiny_plan(rounds=3)
    with LocalFederation(db_url, no_orphans, sites=2, data_path=str(fl_data), extra_env=hub.env) as federation:
        import threading

        result: dict = {}
        runner = threading.Thread(target=lambda: result.setdefault("outcome", federation.run(plan)))
        runner.start()
        try:
            wait_for(lambda: bool(hub.of_type(RoundStart)), what="round 1")
            federation.server.superlink.kill()
        finally:
            runner.join(60)
    outcome = result["outcome"]

    assert outcome.status == "failed"
    assert "SuperLink stopped unexpectedly" in outcome.message
    runs = runs_of(db_url, outcome.flower_run_id)
    assert runs and runs[0].role == "server"
    assert all(r.status in ("failed", "interrupted") for r in runs), [(r.role, r.status) for r in runs]
