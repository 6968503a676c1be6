"""A site runs only what its steward approved, whatever the server's machine submits; plans outside its policy
are declined before any training; the audit trail of a real federation verifies and catches an edit.

One local federation (real SuperLink and SuperNodes on 127.0.0.1) serves every case, with a site policy file the
tests rewrite between runs: each site reads its policy again for every plan.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.audit import kinds
from core.audit.entries import entries
from core.audit.verify import verify
from core.federated.app_trust import StewardKey, fab_from_dir
from core.federated.local import LocalFederation
from core.federated.policy_template import policy_template
from core.federated.processes import FlowerProcessError, flower_processes_under
from core.persistence import Database
from core.persistence.federation_records import federated_runs
from tests.federation.conftest import tiny_plan

ROGUE_APP = Path(__file__).parent / "rogue_app"


@pytest.fixture(scope="module")
def guarded(fl_data, tmp_path_factory) -> Iterator[tuple[LocalFederation, Path, str]]:
    work = tmp_path_factory.mktemp("app-trust")
    policy = work / "site-policy.toml"
    policy.write_text(policy_template(), encoding="utf-8")
    db_url = f"sqlite:///{work / 'runs.db'}"
    federation = LocalFederation(db_url, work / "nodes", sites=2, data_path=str(fl_data), site_policy=policy)
    try:
        federation.start()
        yield federation, policy, db_url
    finally:
        federation.stop()
        left = flower_processes_under(work)
        for proc in left:
            proc.kill()
        assert not left, "Flower processes outlived the federation"


def _audit(db_url: str, kind: str) -> list:
    db = Database.open(db_url, migrate=False)
    try:
        with db.begin() as session:
            return entries(session, kinds=[kind])
    finally:
        db.close()


def _wait_refused(federation: LocalFederation, run_id: int, timeout: float = 90.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        said = [node.refused_runs.get(run_id) for node in federation.sites]
        if all(said):
            return [s for s in said if s]
        time.sleep(0.5)
    raise AssertionError(f"the sites did not report refusing run {run_id}: {[n.refused_runs for n in federation.sites]}")


def test_an_app_submitted_behind_pneumofls_back_never_runs_at_a_site(guarded, tmp_path):
    federation, _policy, db_url = guarded
    server = federation.server
    assert server is not None and server.control is not None
    marker = tmp_path / "rogue-was-here.json"
    # What anyone with a shell on the server's machine can do: `flwr run` a folder against its SuperLink.
    rogue = server.control.submit({"marker": str(marker)}, tmp_path / "rogue", str(ROGUE_APP))
    sentences = _wait_refused(federation, rogue)
    assert all(f"refused run {rogue} from the server" in s for s in sentences)
    warnings = server.check_foreign_runs()
    assert any(f"Flower run {rogue} (app intruder/rogue-app" in w and "not submitted by PneumoFL" in w for w in warnings)
    with contextlib.suppress(FlowerProcessError):  # the rogue ServerApp may have ended on the refusals already
        server.control.stop(rogue)
    assert not marker.exists(), "the rogue ClientApp ran at a site"
    refused = [e for e in _audit(db_url, kinds.APP_REFUSED) if e.details.get("flower_run_id") == rogue]
    assert {e.details["site"] for e in refused} == {"site-1", "site-2"}
    assert any(e.details.get("flower_run_id") == rogue for e in _audit(db_url, kinds.RUN_NOT_SUBMITTED))


def test_an_app_signed_by_a_key_the_site_does_not_trust_is_refused(guarded, tmp_path):
    federation, _policy, _db_url = guarded
    server = federation.server
    assert server is not None and server.hub is not None and server.control is not None
    marker = tmp_path / "signed-rogue.json"
    fab = fab_from_dir(ROGUE_APP)
    app_id = server.hub.register(fab)
    server.approve(StewardKey(tmp_path / "intruder-key").approve(fab, "intruder"))  # a valid signature, wrong key
    run = server.control.submit({"marker": str(marker)}, tmp_path / "signed", server.hub.spec(app_id))
    _wait_refused(federation, run)
    with contextlib.suppress(FlowerProcessError):
        server.control.stop(run)
    assert not marker.exists()


def test_a_plan_outside_the_sites_policy_is_declined_before_any_training(guarded):
    # Each rule of the policy is checked in tests/core/federated/test_policy.py; this is the path through real sites.
    policy_line, plan_changes, reason = 'allowed_strategies = ["fedavg"]', {"strategy": "fedadam"}, "fedadam"
    federation, policy, db_url = guarded
    key = policy_line.split(" = ")[0]
    lines = [line for line in policy_template().splitlines() if not line.startswith(f"{key} =")]
    policy.write_text("\n".join([*lines, policy_line]) + "\n", encoding="utf-8")
    try:
        outcome = federation.run(tiny_plan(**plan_changes))
    finally:
        policy.write_text(policy_template(), encoding="utf-8")
    assert outcome.status == "failed"
    assert "declined by site policy" in outcome.message and reason in outcome.message
    db = Database.open(db_url, migrate=False)
    try:
        with db.begin() as session:
            runs = federated_runs(session, outcome.flower_run_id)
            assert [run.role for run in runs] == ["server"], "a site trained although it declined"
    finally:
        db.close()
    declined = [e for e in _audit(db_url, kinds.PLAN_DECLINED) if e.details["flower_run_id"] == outcome.flower_run_id]
    assert {e.details["site"] for e in declined} == {"site-1", "site-2"}
    assert all(reason in e.details["reason"] for e in declined)


def test_the_sites_own_app_runs_and_the_audit_trail_of_the_federation_verifies(guarded):
    federation, _policy, db_url = guarded
    outcome = federation.run(tiny_plan(rounds=1))
    assert outcome.status == "completed", outcome.message
    trained = [e for e in _audit(db_url, kinds.ROUND_TRAINED) if e.details["flower_run_id"] == outcome.flower_run_id]
    assert {e.details["site"] for e in trained} == {"site-1", "site-2"}
    assert all(len(e.details["weights_digest"]) == 64 and e.details["bytes_sent"] > 0 for e in trained)
    db = Database.open(db_url, migrate=False)
    try:
        result = verify(db)
        assert result.ok, result.reason
        target = trained[0].seq
        with db.begin() as session:  # someone with the database but not the key edits one entry
            session.execute(
                text("UPDATE audit_entries SET details = :d WHERE seq = :s"), {"d": '{"site": "x"}', "s": target}
            )
        broken = verify(db)
        assert not broken.ok and broken.first_bad_seq == target
    finally:
        db.close()
