"""The site data steward's policy: the file, the plan summary and the check of a plan against both."""

import dataclasses
import math

import pytest
import torch
from flwr.app import MetricRecord
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

from core.config import BACKBONES
from core.errors import ConfigError, PneumoFLError
from core.federated.certs import init_federation_certs
from core.federated.local_layers import site_local_keys, split_state
from core.federated.plan_summary import VAL_METRICS, federation_key, server_key, summarize_plan
from core.federated.policy import (
    PolicyError,
    SitePolicy,
    ca_fingerprint,
    default_policy,
    format_fingerprint,
    load_policy,
    policy_digest,
)
from core.federated.policy_check import InMemoryLedger, check_plan
from core.federated.policy_template import policy_template, policy_toml, write_policy_template
from core.federated.settings import STRATEGIES, FederationConfig
from core.federated.strategies import build_aggregation

FP = "ab" * 32
OTHER = "cd" * 32


def plan(**changes):
    return FederationConfig(name="pneumonia-2026").with_changes(**changes)


def summary(p=None, policy=None, fingerprint=FP, loopback=False, server="fl.example:9092"):
    return summarize_plan(
        p or plan(),
        server_name=server,
        server_fingerprint=fingerprint,
        insecure_loopback=loopback,
        policy=policy or default_policy(),
    )


def listed(**changes):
    return dataclasses.replace(default_policy(), allowed_servers=(FP,), **changes)


def decide(policy, s, ledger=None):
    return check_plan(policy, s, ledger or InMemoryLedger())


# --- the file -------------------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    policy = default_policy()
    assert policy.allowed_servers == () and policy.allow_insecure_loopback
    assert policy.allowed_models == BACKBONES and "small_cnn" in BACKBONES and "resnet18" in BACKBONES
    assert policy.allowed_strategies == STRATEGIES
    assert (policy.max_rounds, policy.max_local_epochs, policy.max_epsilon) == (50, 20, 10.0)
    assert not policy.require_dp and policy.min_dp_noise == 0.0 and policy.send_site_metrics
    assert (policy.local_dp_noise, policy.local_clip_norm, policy.local_dp) == (0.0, 0.0, False)


def test_template_loads_back_to_the_defaults(tmp_path):
    path = tmp_path / "site-policy.toml"
    path.write_text(policy_template())
    assert load_policy(path) == default_policy()
    lines = policy_template().splitlines()
    assert next(line for line in lines if line and not line.startswith("#")) == "policy_version = 1"
    # Every key is written, each under a comment saying what it is for.
    for field in dataclasses.fields(SitePolicy):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{field.name} = "))
        assert lines[at - 1].startswith("# "), field.name


def test_template_with_fingerprints_lists_them(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(policy_template([format_fingerprint(FP), OTHER.upper(), FP]))
    assert load_policy(path) == dataclasses.replace(default_policy(), allowed_servers=(FP, OTHER))
    assert format_fingerprint(FP) in path.read_text()  # as openssl prints it, for people to compare


def test_write_refuses_to_overwrite_and_is_not_world_writable(tmp_path):
    path = write_policy_template(tmp_path / "p.toml")
    assert path.stat().st_mode & 0o022 == 0
    with pytest.raises(PolicyError, match="already exists; give --force"):
        write_policy_template(path)
    write_policy_template(path, [FP], force=True)
    assert load_policy(path).allowed_servers == (FP,)


def test_show_form_loads_back_and_digest_tracks_changes(tmp_path):
    policy = listed(max_rounds=7, require_dp=True, min_dp_noise=1.5)
    path = tmp_path / "shown.toml"
    path.write_text(policy_toml(policy))
    assert load_policy(path) == policy
    assert policy_digest(policy) == policy_digest(load_policy(path))
    assert policy_digest(policy) != policy_digest(default_policy())
    assert len(policy_digest(policy)) == 64


def test_ca_fingerprint_matches_cryptography(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    made = init_federation_certs(tmp_path / "fed", ["fl.example"], [])
    expected = x509.load_pem_x509_certificate(made.ca_cert.read_bytes()).fingerprint(hashes.SHA256()).hex()
    assert ca_fingerprint(made.ca_cert) == expected
    with pytest.raises(PolicyError, match="does not exist"):
        ca_fingerprint(tmp_path / "none.pem")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("policy_version = 1\nmax_round = 5\n", "unknown key(s) max_round"),
        ("policy_version = 1\nmax_rounds = 'many'\n", "max_rounds must be a whole number"),
        ("policy_version = 1\nmax_rounds = 0\n", "max_rounds must be a whole number of at least 1"),
        ("policy_version = 1\nrequire_dp = 1\n", "require_dp must be true or false"),
        ("policy_version = 1\nmin_dp_noise = -1.0\n", "min_dp_noise must be a number of 0 or more"),
        ("policy_version = 1\nmax_epsilon = 0\n", "max_epsilon must be a positive privacy budget"),
        ("policy_version = 1\nallowed_models = 'small_cnn'\n", "allowed_models must be a list"),
        ("policy_version = 1\nallowed_models = ['vit']\n", "allowed_models names 'vit'; choose from"),
        ("policy_version = 1\nallowed_strategies = ['fedsgd']\n", "allowed_strategies names 'fedsgd'"),
        ("policy_version = 1\nallowed_servers = ['abc']\n", "allowed_servers: 'abc' is not a SHA-256 fingerprint"),
        ("policy_version = 2\n", "is version 2, newer than this PneumoFL understands"),
        ("max_rounds = 5\n", "lacks policy_version"),
        ("policy_version = 1\nlocal_dp_noise = 1.0\n", "local_dp_noise is 1.0 but local_clip_norm is 0"),
        ("policy_version = 1\nmax_rounds = [\n", "is not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, PneumoFLError)


def test_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(PolicyError, match="pneumofl site policy init"):
        load_policy(tmp_path / "none.toml")


def test_local_noise_with_clip_is_accepted(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("policy_version = 1\nlocal_dp_noise = 0.5\nlocal_clip_norm = 2\n")
    policy = load_policy(path)
    assert policy.local_dp and policy.local_clip_norm == 2.0 and isinstance(policy.local_clip_norm, float)


# --- the summary ----------------------------------------------------------------------------------------------


def test_summary_says_what_leaves_the_site():
    s = summary(plan(rounds=3, local_epochs=2))
    assert (s.federation, s.backbone, s.strategy, s.rounds, s.local_epochs) == (
        "pneumonia-2026",
        "small_cnn",
        "fedavg",
        3,
        2,
    )
    assert s.epsilon is None and s.bytes_sent == 4 * s.parameters_sent
    assert "train_loss" in s.metrics_sent and "val_auroc" in s.metrics_sent and "train_seconds" in s.metrics_sent
    assert "global_val_auroc" in s.metrics_sent
    quiet = summary(plan(), policy=dataclasses.replace(default_policy(), send_site_metrics=False))
    assert not any(name.startswith("global_val_") for name in quiet.metrics_sent)
    assert any("stays at this site" in line for line in quiet.lines())
    assert any("counts of this site's training images by modality" in line for line in s.lines())
    closed = summary(plan(), policy=dataclasses.replace(default_policy(), send_data_fingerprint=False))
    assert any("(its data fingerprint) stay at this site" in line for line in closed.lines())
    text = "\n".join(s.lines())
    assert format_fingerprint(FP) in text and "3 rounds of 2 local epochs" in text and s.plan_hash in text
    assert "No differential privacy" in text and f"{s.parameters_sent:,} weights" in text


@pytest.mark.parametrize("changes", [{}, {"dp_noise": 1.0}, {"local_bn": True}])
def test_parameter_count_is_what_the_site_sends(changes):
    from core.model.checkpoint import shared_state
    from core.model.module import PneumoniaClassifier

    p = plan(**changes)
    model = PneumoniaClassifier(backbone=p.training.backbone)
    shared, _ = split_state(
        shared_state(model), site_local_keys(model, local_bn=p.local_bn, statistics=p.local_statistics)
    )
    assert summary(p).parameters_sent == sum(t.numel() for t in shared.values())


def test_val_metric_names_are_the_ones_training_reports():
    from core.model.module import flatten_metrics, make_metrics

    metrics = make_metrics()
    metrics.update(torch.tensor([0.2, 0.8, 0.6]), torch.tensor([0, 1, 0]))
    assert set(VAL_METRICS) == set(flatten_metrics(metrics.compute(), "val")) | {"val_loss"}


def test_plan_hash_depends_on_plan_and_server():
    assert summary().plan_hash == summary(fingerprint=format_fingerprint(FP)).plan_hash
    assert summary().plan_hash != summary(fingerprint=OTHER).plan_hash
    assert summary().plan_hash != summary(plan(rounds=6)).plan_hash


def test_ledger_keys():
    assert server_key(format_fingerprint(FP)) == server_key(FP) == f"sha256:{FP}"
    assert server_key("127.0.0.1:9092") == "address:127.0.0.1:9092"
    assert federation_key(FP, "a") != federation_key(OTHER, "a") != federation_key(FP, "b")
    assert summary().federation_key == federation_key(FP, "pneumonia-2026")


@pytest.mark.parametrize("clipping", ["fixed", "adaptive"])
def test_epsilon_equals_the_servers_accountant(clipping):
    p = plan(rounds=4, min_sites=3, dp_noise=1.3, dp_clipping=clipping, dp_delta=1e-6)
    aggregation = build_aggregation(p, lambda contents, key: MetricRecord({}))
    for _ in range(p.rounds):
        if aggregation.wrapper_accounts:  # Flower's fixed-clipping wrapper composes this after each aggregation
            event = GaussianPrivacyEvent(p.dp_noise, p.min_sites, aggregation.accountant.config.population_size)
            aggregation.accountant.compose(event)
        else:
            aggregation.released()
    server = aggregation.privacy_spent()
    assert server["dp_releases"] == 4
    assert summary(p).epsilon == pytest.approx(server["dp_epsilon"], rel=1e-12)


# --- the check ------------------------------------------------------------------------------------------------


def test_a_plan_within_policy_is_allowed():
    decision = decide(listed(), summary())
    assert decision.allowed and "within this site's policy" in decision.reason


def test_rounds_count_what_the_federation_already_trained():
    s = summary(plan(rounds=80))
    ledger = InMemoryLedger()
    ledger.record(s, 30)
    decision = decide(listed(), s, ledger)
    assert not decision.allowed
    assert decision.reason == (
        "The plan asks for 80 rounds of federation 'pneumonia-2026'; this site's policy allows 50 per federation "
        "(30 already trained)."
    )
    assert decide(listed(), summary(plan(rounds=20)), ledger).allowed
    assert not decide(listed(), summary(plan(rounds=21)), ledger).allowed
    assert decide(listed(), summary(plan(rounds=21, name="another")), ledger).allowed  # a separate federation


def test_strategy_and_model_and_epochs_not_allowed():
    policy = listed(allowed_strategies=("fedavg", "fedprox"), allowed_models=("small_cnn",), max_local_epochs=5)
    decision = decide(policy, summary(plan(strategy="krum")))
    assert not decision.allowed
    assert decision.reason == (
        "The plan combines updates with krum; this site's policy allows only fedavg, fedprox (allowed_strategies)."
    )
    big = plan(training=plan().training.with_overrides(backbone="resnet18"))
    assert "trains a resnet18; this site's policy allows only small_cnn" in decide(policy, summary(big)).reason
    epochs = decide(policy, summary(plan(local_epochs=6))).reason
    assert "6 local epochs per round; this site's policy allows at most 5 (max_local_epochs)" in epochs


def test_dp_required_but_absent():
    decision = decide(listed(require_dp=True), summary())
    assert not decision.allowed
    assert decision.reason == (
        "The plan has no differential privacy (dp noise 0); this site's policy requires it (require_dp = true)."
    )
    assert decide(listed(require_dp=True), summary(plan(dp_noise=4.0))).allowed


def test_dp_noise_below_the_floor():
    decision = decide(listed(min_dp_noise=1.5), summary(plan(dp_noise=1.0)))
    assert not decision.allowed
    assert decision.reason == (
        "The plan's differential-privacy noise multiplier is 1; this site's policy requires at least 1.5 "
        "(min_dp_noise)."
    )


def test_epsilon_budget_counts_every_run_with_the_same_server():
    first = summary(plan(dp_noise=2.0, rounds=5))  # epsilon about 5.4
    ledger = InMemoryLedger()
    assert decide(listed(), first, ledger).allowed
    ledger.record(first, first.rounds, first.epsilon)
    second = summary(plan(dp_noise=2.0, rounds=5, name="a-new-federation"))
    decision = decide(listed(), second, ledger)
    assert not decision.allowed
    assert decision.reason == (
        f"The plan would spend epsilon {second.epsilon:.3g} (delta 1e-05) with server fl.example:9092; this site's "
        f"policy allows 10 per server ({first.epsilon:.3g} already spent)."
    )
    other_server = dataclasses.replace(listed(), allowed_servers=(FP, OTHER))
    assert decide(other_server, summary(plan(dp_noise=2.0, rounds=5), fingerprint=OTHER), ledger).allowed


def test_weak_noise_alone_can_exceed_the_budget():
    decision = decide(listed(), summary(plan(dp_noise=0.5, rounds=5)))
    assert not decision.allowed and "allows 10 per server (0 already spent)" in decision.reason


def test_remote_server_must_be_listed():
    decision = decide(listed(), summary(fingerprint=OTHER))
    assert not decision.allowed
    assert decision.reason == (
        f"Server fl.example:9092 has CA fingerprint {format_fingerprint(OTHER)}, which is not in this site's "
        "policy's allowed_servers (1 listed); the data steward must list it first."
    )
    plain = decide(default_policy(), summary(fingerprint=None))
    assert not plain.allowed and "has no TLS, so no CA fingerprint" in plain.reason


def test_insecure_loopback_allowed_or_not():
    trial = summary(fingerprint=None, loopback=True, server="127.0.0.1:9092")
    assert decide(default_policy(), trial).allowed
    decision = decide(dataclasses.replace(default_policy(), allow_insecure_loopback=False), trial)
    assert not decision.allowed
    assert decision.reason == (
        "Server 127.0.0.1:9092 runs on this machine without TLS; this site's policy sets "
        "allow_insecure_loopback = false."
    )


def test_infinite_epsilon_is_declined():
    s = dataclasses.replace(summary(plan(dp_noise=1.0)), epsilon=math.inf)
    assert not decide(listed(), s).allowed


def test_an_invalid_plan_is_refused_with_its_field():
    with pytest.raises(ConfigError, match="rounds"):
        summary(plan(rounds=0))
