"""Faults with real Flower processes: missing sites, a site killed mid-round, the SuperLink dying."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from core.events import ClientUpdate, TrainingStart
from core.federated import nodes
from core.federated.local import LocalFederation
from core.federated.nodes import SiteNode
from core.persistence import Database
from core.persistence.federation_records import federated_runs
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
            return federated_runs(s, flower_run_id)
    finally:
        db.close()


def test_killed_site_fails_its_round_alone_and_can_rejoin(tmp_path, fl_data, hub, no_orphans):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    # Two sites, one killed mid-round: the round completes with the other once the killed site is given up on (the
    # round timeout; Flower itself lists a killed node for about a minute). One round: every later round would
    # wait for the dead node the same way.
    plan = tiny_plan(rounds=1, min_sites=1, round_timeout=25.0)
    with LocalFederation(db_url, no_orphans, sites=2, data_path=str(fl_data), extra_env=hub.env) as federation:
        victim = federation.sites[1]
        result: dict = {}

        import threading

        runner = threading.Thread(target=lambda: result.setdefault("outcome", federation.run(plan)))
        runner.start()
        try:
            # Kill site-2 while it trains round 1 (its run has started: its ClientApp is running).
            wait_for(
                lambda: any(e.experiment_name.endswith("site-2") for e in hub.of_type(TrainingStart)), what="site-2"
            )
            victim.kill()
            # The site comes back at once (same settings, same database) while the round waits for its old node.
            rejoined = SiteNode(
                victim.site, victim.superlink_address, no_orphans / "site-2-again", extra_env=hub.env, send_approval=False
            )
            federation.server.approve(rejoined.approval)  # a local federation hands its sites' approvals over
            federation.sites.append(rejoined)
            rejoined.start()
            rejoined_id = rejoined.wait_connected()
            assert rejoined_id != victim.node_id  # a new Flower node for the same site
        finally:
            runner.join(240)
    outcome = result["outcome"]

    assert outcome.status == "completed", outcome.message
    updates = hub.of_type(ClientUpdate)
    assert [u.client_name for u in updates if not u.failed] == ["site-1"]
    failed = [u for u in updates if u.failed]
    # Once, by name (even though it never replied), with the reason in words: not Flower's node id and text.
    assert len(failed) == 1 and failed[0].client_name == "site-2", [(u.client_name, u.error) for u in failed]
    assert failed[0].client_id != str(rejoined_id)  # the dead node failed, not the site's new one
    assert "went offline" in failed[0].error or "no reply within the round timeout" in failed[0].error
    assert "Error:" not in failed[0].error and "heartbeat" not in failed[0].error
    runs = runs_of(db_url, outcome.flower_run_id)
    assert runs[0].status == "completed"
    assert sorted(r.experiment_name for r in runs[1:]) == ["fl-test · site-1", "fl-test · site-2"]


def test_a_task_runner_that_cannot_start_fails_the_run_with_its_reason(tmp_path, fl_data, monkeypatch, no_orphans):
    # A flower-superexec that refuses to run (as the bundle's did when Flower could not find its own version):
    # the run would wait forever for a server app; it fails instead, saying why and where the log is.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "flower-superexec").write_text(
        "#!/bin/sh\necho 'ERROR : Runtime version compatibility check failed (the test refused it)'\nexit 3\n"
    )
    (fake / "flower-superexec").chmod(0o755)
    monkeypatch.setattr(nodes, "START_TIMEOUT_S", 8.0)
    env = {"PATH": os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]])}
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    with LocalFederation(db_url, no_orphans, sites=2, data_path=str(fl_data), extra_env=env) as federation:
        outcome = federation.run(tiny_plan(rounds=1))
    assert outcome.status == "failed"
    assert "never started the server app" in outcome.message
    assert "Runtime version compatibility check failed (the test refused it)" in outcome.message
    assert "superlink.log" in outcome.message
