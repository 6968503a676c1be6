"""The site's own counting: rounds and epsilon audited per trained round are what its next plan check reads."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord

from core.audit import kinds
from core.audit.entries import entries
from core.federated.plan_summary import plan_epsilon
from core.federated.policy import default_policy
from core.federated.settings import FederationConfig, SiteSettings
from core.federated.site_consent import AuditLedger, audit_round, summarize
from core.persistence import Database


def test_rounds_and_epsilon_a_site_trained_are_counted_against_the_same_server_and_federation(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    Database.open(db_url).close()
    site = SiteSettings(
        site_name="north",
        data_path=str(tmp_path),
        db_url=db_url,
        server_address="fl.example:9092",
        server_fingerprint="ab" * 32,
        consent_dir=str(tmp_path / "consent"),
    )
    plan = FederationConfig.from_run_config(FederationConfig(name="lung", rounds=4, dp_noise=1.0).run_config())
    arrays = ArrayRecord({"w": torch.ones(10)})
    for round_number in (1, 2):
        audit_round(site, plan, 77, round_number, arrays, ["train_loss"])
    summary = summarize(plan, site, default_policy())
    ledger = AuditLedger(db_url)
    assert ledger.rounds_trained(summary.federation_key) == 2
    assert ledger.epsilon_spent(summary.server_key) == pytest.approx(plan_epsilon(plan, 2))
    with Database.open(db_url, migrate=False) as db, db.begin() as session:
        trained = entries(session, kinds=[kinds.ROUND_TRAINED])
    assert [e.details["weights_digest"] for e in trained] == [arrays.object_id] * 2
    assert all(e.details["bytes_sent"] >= 40 and e.details["metrics_sent"] == ["train_loss"] for e in trained)
