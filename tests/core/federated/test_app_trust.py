"""The pieces of app trust without Flower's processes: the steward's signature as Flower's own check reads it, the
server's hub and fleet front taking approvals, versions told at both ends, and a trust file that is never empty."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
from flwr.supercore.fab import Fab
from flwr.supernode.start_client_internal import _verify_fab

from core.federated.app_hub import AppHub
from core.federated.app_trust import (
    APP_ID,
    Approval,
    AppTrustError,
    StewardKey,
    check_trusted_entities,
    fab_sha256,
    pneumofl_fab,
)
from core.federated.certs import init_federation_certs
from core.federated.fleet_front import FleetFront
from core.federated.processes import FlowerProcessError
from core.federated.settings import SiteSettings
from core.federated.site_guard import RefusalWatch, send_approval
from core.federated.site_node import SiteNode


def _fab_as_flower_stores_it(fab: bytes, approvals: list[Approval]) -> Fab:
    verifications = dict(a.verification() for a in approvals) | {"valid_license": "Valid"}
    return Fab(fab_sha256(fab), fab, verifications)


def test_flowers_own_check_accepts_the_stewards_signature_and_nothing_else(tmp_path):
    steward = StewardKey(tmp_path / "north").load_or_create()
    trusted = json.loads(steward.write_trusted_entities(tmp_path / "trusted.yaml").read_text())
    fab = pneumofl_fab()
    assert _verify_fab(_fab_as_flower_stores_it(fab, [steward.approve(fab, "north")]), trusted)
    other = StewardKey(tmp_path / "intruder").load_or_create()
    assert not _verify_fab(_fab_as_flower_stores_it(fab, [other.approve(fab, "intruder")]), trusted)
    # The signature is over one bundle: the same signature on another bundle does not verify.
    approval = steward.approve(fab, "north")
    tampered = fab.replace(b"pneumofl", b"pneumofX", 1)
    assert not _verify_fab(Fab(fab_sha256(tampered), tampered, dict([approval.verification()])), trusted)


def test_a_rotated_key_no_longer_verifies_the_old_approvals(tmp_path):
    steward = StewardKey(tmp_path / "north").load_or_create()
    old = steward.approve(pneumofl_fab(), "north")
    old_id = steward.key_id
    assert steward.rotate() != old_id
    trusted = json.loads(steward.write_trusted_entities(tmp_path / "trusted.yaml").read_text())
    assert old_id not in trusted
    assert not _verify_fab(_fab_as_flower_stores_it(pneumofl_fab(), [old]), trusted)
    assert (tmp_path / "north" / "steward_ed25519").stat().st_mode & 0o077 == 0


def test_forged_approvals_are_refused_by_name(tmp_path):
    steward = StewardKey(tmp_path / "north").load_or_create()
    good = steward.approve(pneumofl_fab(), "north")
    other = StewardKey(tmp_path / "other").load_or_create()
    with pytest.raises(AppTrustError, match="key id that is not its key's"):
        Approval.from_json(dataclasses.replace(good, key_id=other.key_id).to_json())
    with pytest.raises(AppTrustError, match="does not verify"):
        Approval.from_json(dataclasses.replace(good, fab_sha256="0" * 64).to_json())
    with pytest.raises(AppTrustError, match="malformed"):
        Approval.from_json(b"{not json")


def test_an_empty_trust_file_is_refused(tmp_path):
    empty = tmp_path / "trusted.yaml"
    empty.write_text("{}\n")
    with pytest.raises(AppTrustError, match="would then run any app"):
        check_trusted_entities(empty)
    assert check_trusted_entities(StewardKey(tmp_path / "k").write_trusted_entities(tmp_path / "t.yaml")) == 1


def test_the_bundle_hash_names_the_version():
    assert pneumofl_fab("0.1.0") == pneumofl_fab("0.1.0")
    assert fab_sha256(pneumofl_fab("0.1.0")) != fab_sha256(pneumofl_fab("0.2.0"))


def test_approvals_travel_through_the_fleet_front_and_versions_are_told_at_both_ends(tmp_path):
    notices: list[str] = []
    hub = AppHub(on_notice=notices.append)
    hub.start()
    front = FleetFront("127.0.0.1", 0, "http://127.0.0.1:1", None, None, on_approval=hub.receive)
    front.start()
    try:
        address = f"127.0.0.1:{front.port}"
        steward = StewardKey(tmp_path / "north").load_or_create()
        said = send_approval(address, steward.approve(pneumofl_fab(), "north"), None)
        assert "recorded the approval of site 'north'" in said
        assert hub.approved_sites() == {"north"}
        # What the SuperLink gets when it fetches our app: the bundle and the sites' signatures.
        reply = httpx.post(f"{hub.url}/hub/fetch-fab", json={"app_id": APP_ID, "app_version": None}).json()
        assert [v["public_key_id"] for v in reply["verifications"]] == [steward.key_id]
        assert fab_sha256(httpx.get(reply["fab_url"]).content) == hub.own_sha256
        assert httpx.post(f"{hub.url}/hub/fetch-fab", json={"app_id": "@intruder/rogue-app"}).status_code == 404

        newer = steward.approve(pneumofl_fab("9.9.9"), "south", version="9.9.9")
        with pytest.raises(FlowerProcessError) as told:
            send_approval(address, newer, None)
        for sentence in (str(told.value), notices[-1]):
            assert "Site 'south' runs PneumoFL 9.9.9 and the server runs PneumoFL 0.1.0" in sentence
        assert hub.approved_sites() == {"north"}
    finally:
        front.stop()
        hub.stop()


def test_the_site_hears_of_every_app_flower_refused_once(tmp_path):
    log = tmp_path / "supernode.log"
    heard: list[tuple[int, str]] = []
    watch = RefusalWatch(log, "fl.example:9092", lambda run, sentence: heard.append((run, sentence)))
    log.write_text(
        "INFO :      [RUN 41, ROUND 1]\nINFO :      Receiving: train message\n"
        "ERROR :     FAB verification failed: the provided trusted entities could not verify the FAB.\n"
        "INFO :      [RUN 41, ROUND 2]\nERROR :     FAB verification failed: again\n"
        "INFO :      [RUN 42]\nERROR :     The FAB could not be verified. App verification is not supported\n"
    )
    watch.poll()
    assert [run for run, _ in heard] == [41, 42]
    assert "refused run 41 from the server at fl.example:9092" in heard[0][1]


def test_a_site_whose_trust_list_would_be_empty_never_starts(tmp_path):
    class Careless(StewardKey):  # a trust file gone empty (edited, truncated): Flower would then check nothing
        def write_trusted_entities(self, path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
            return path

    site = SiteSettings(site_name="north", data_path=str(tmp_path), db_url=f"sqlite:///{tmp_path / 'site.db'}")
    node = SiteNode(site, "127.0.0.1:9", tmp_path / "node", steward=Careless(tmp_path / "key"), send_approval=False)
    with pytest.raises(AppTrustError, match="would then run any app"):
        node.start()
    assert node.process is None, "a SuperNode was started without its check"


def test_a_server_that_enrols_sites_counts_only_their_signed_approvals_under_their_names(tmp_path):
    certs = init_federation_certs(tmp_path / "certs", ["127.0.0.1"], ["north", "south"])
    hub = AppHub()
    hub.start()
    front = FleetFront("127.0.0.1", 0, "http://127.0.0.1:1", None, None, on_approval=hub.receive)
    front.start()
    try:
        hub.enrolled(certs.nodes["north"].public_key.read_text(), "north")
        address = f"127.0.0.1:{front.port}"
        steward = StewardKey(tmp_path / "steward").load_or_create()
        unsigned = send_approval(address, steward.approve(pneumofl_fab(), "north"), None)
        assert "only from enrolled sites" in unsigned and hub.approved_sites() == set()
        # south's key is not enrolled: signing with it does not count either
        signed_by_south = send_approval(
            address, steward.approve(pneumofl_fab(), "north"), None, certs.nodes["south"].private_key
        )
        assert "only from enrolled sites" in signed_by_south and hub.approved_sites() == set()
        # north's own key: counted for north, whatever name the approval gives
        said = send_approval(
            address, steward.approve(pneumofl_fab(), "mallory"), None, certs.nodes["north"].private_key
        )
        assert "recorded the approval of site 'north'" in said and hub.approved_sites() == {"north"}
    finally:
        front.stop()
        hub.stop()


def test_sites_approving_at_the_same_moment_are_all_kept_for_the_servers_restart(tmp_path):
    # Sites send their approvals together at a federation's start; the server writes each into the file its next
    # start reads. Two writers once renamed each other's temporary file away (a traceback in the server's console)
    # and a read-modify-write could drop an approval.
    from concurrent.futures import ThreadPoolExecutor

    from core.federated.nodes import ServerNode
    from core.federated.settings import ServerSettings

    server = ServerNode(
        ServerSettings(db_url=f"sqlite:///{tmp_path / 'runs.db'}"), tmp_path / "server", state_file=tmp_path / "sl.db"
    )
    fab = pneumofl_fab()
    approvals = [StewardKey(tmp_path / f"steward-{i}").load_or_create().approve(fab, f"site-{i}") for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in pool.map(server._approved, approvals * 3):
            pass
    kept = server._kept_approvals()
    assert sorted(a.site_name for a in kept) == sorted(f"site-{i}" for i in range(12))
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"
    assert (tmp_path / "sl-approvals.json").stat().st_mode & 0o077 == 0
