"""`pneumofl site policy` as a site's data steward runs it: real processes, files, exit codes and messages."""

import stat

from core.federated.certs import init_federation_certs
from core.federated.policy import ca_fingerprint, default_policy, format_fingerprint, load_policy
from tests.e2e.cli import pneumofl


def test_init_writes_a_file_that_check_accepts(env, tmp_path):
    certs = init_federation_certs(tmp_path / "fed", ["fl.example"], [])
    path = tmp_path / "site-policy.toml"
    made = pneumofl("site", "policy", "init", "-o", path, "--allow-server", certs.ca_cert, env=env, check=0)
    fingerprint = ca_fingerprint(certs.ca_cert)
    assert format_fingerprint(fingerprint) in made.stdout and str(path) in made.stdout
    assert not path.stat().st_mode & stat.S_IWOTH
    assert load_policy(path).allowed_servers == (fingerprint,)

    checked = pneumofl("site", "policy", "check", path, env=env, check=0)
    assert checked.stdout.startswith("OK")

    shown = pneumofl("site", "policy", "show", path, env=env, check=0).stdout
    assert format_fingerprint(fingerprint) in shown and "max_rounds = 50" in shown
    defaults = pneumofl("site", "policy", "show", env=env, check=0).stdout
    assert "allowed_servers = []" in defaults and "the defaults" in defaults
    assert f"max_epsilon = {default_policy().max_epsilon}" in defaults


def test_init_refuses_to_overwrite_without_force(env, tmp_path):
    path = tmp_path / "site-policy.toml"
    path.write_text("policy_version = 1\nmax_rounds = 3\n")
    refused = pneumofl("site", "policy", "init", "-o", path, env=env, check=2)
    assert "already exists; give --force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert load_policy(path).max_rounds == 3
    pneumofl("site", "policy", "init", "-o", path, "--force", env=env, check=0)
    assert load_policy(path) == default_policy()


def test_check_on_a_bad_file_names_the_field(env, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("policy_version = 1\nmax_local_epochs = 'twenty'\n")
    proc = pneumofl("site", "policy", "check", path, env=env, check=2)
    assert "max_local_epochs must be a whole number" in proc.stderr and str(path) in proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("policy_version = 1\nsend_metrics = false\n")
    assert "unknown key(s) send_metrics" in pneumofl("site", "policy", "check", unknown, env=env, check=2).stderr
    missing = pneumofl("site", "policy", "show", tmp_path / "none.toml", env=env, check=2)
    assert "does not exist" in missing.stderr


def test_allow_server_with_a_bad_certificate_is_one_sentence(env, tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    proc = pneumofl("site", "policy", "init", "-o", tmp_path / "p.toml", "--allow-server", pem, env=env, check=2)
    assert str(pem) in proc.stderr and not (tmp_path / "p.toml").exists()
