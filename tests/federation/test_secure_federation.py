"""TLS and node authentication with real processes: enrolled sites train, others are refused, runs cannot be
submitted through the exposed address, and nothing but weights and numbers crosses the site boundary."""

from __future__ import annotations

import pytest
import torch

from core.events import ClientUpdate
from core.federated.certs import init_federation_certs, private_key_fingerprint
from core.federated.control import BUNDLE_DIR, FlowerControl
from core.federated.local_layers import LocalLayerStore, normalisation_keys
from core.federated.nodes import Security, ServerNode, SiteNode
from core.federated.policy import ca_fingerprint
from core.federated.policy_template import policy_template
from core.federated.processes import FlowerProcessError, flower_environment, free_port
from core.federated.settings import ServerSettings, SiteSettings
from core.federated.site import site_state_dir
from core.model.module import PneumoniaClassifier
from core.persistence import Database
from core.persistence.federation_records import federated_runs
from tests.federation.conftest import tiny_plan


def test_tls_federation_with_node_authentication(tmp_path, fl_data, hub, no_orphans):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    certs = init_federation_certs(tmp_path / "certs", ["127.0.0.1"], ["north", "south", "intruder"])
    traffic: list[tuple[str, bytes, bytes]] = []
    server = ServerNode(
        ServerSettings(db_url=db_url, eval_data=str(fl_data), eval_split="val", address="127.0.0.1"),
        no_orphans / "server",
        security=Security.from_dir(tmp_path / "certs"),
        public_host="127.0.0.1",
        public_port=free_port(),
        extra_env=hub.env,
        tap=lambda path, request, response: traffic.append((path, request, response)),
    )
    nodes: list[SiteNode] = []
    try:
        server.start()
        assert server.port != server.front.port  # the SuperLink itself is not what sites reach
        for name in ("north", "south"):
            server.enrol(certs.nodes[name].public_key, name=name)

        # Run submission through the exposed address is refused: the front forwards the Fleet API only.
        outsider = FlowerControl(
            tmp_path / "outsider-home",
            server.front.port,
            flower_environment(tmp_path / "outsider-home"),
            root_certificates=certs.ca_cert,
        )
        with pytest.raises(FlowerProcessError):
            outsider.submit(tiny_plan().run_config(), tmp_path / "outsider", str(BUNDLE_DIR))

        # Each site's steward allows this server's CA and approves plans within policy (unattended sites).
        policy = tmp_path / "site-policy.toml"
        # ... and keeps the counts describing its training images at home.
        template = policy_template([ca_fingerprint(certs.ca_cert)])
        assert "send_data_fingerprint = true" in template
        policy.write_text(template.replace("send_data_fingerprint = true", "send_data_fingerprint = false"), "utf-8")
        for i, name in enumerate(("north", "south", "intruder")):
            site = SiteSettings(
                site_name=name,
                data_path=str(fl_data),
                db_url=db_url,
                server_address=server.fleet_address,
                partition_id=min(i, 1),
                num_partitions=2,
                max_threads=1,
                policy_file=str(policy),
                approve_within_policy=True,
            )
            node = SiteNode(
                site,
                server.fleet_address,
                no_orphans / name,
                root_certificates=certs.ca_cert,
                private_key=certs.nodes[name].private_key,
                extra_env=hub.env,
            )
            node.start()
            nodes.append(node)
        for node in nodes[:2]:
            node.wait_connected()
        # The site whose key was never enrolled is told so in one sentence, with its key's fingerprint.
        with pytest.raises(FlowerProcessError) as refused:
            nodes[2].wait_connected()
        intruder_log = nodes[2].process.log_tail(20_000)

        # FedBN: the sites' normalisation layers stay home.
        run_id = server.submit(tiny_plan(local_bn=True, rounds=1))
        outcome = server.follow(run_id)
    finally:
        for node in nodes:
            node.stop()
        server.stop()

    assert outcome.status == "completed", outcome.message
    updates = hub.of_type(ClientUpdate)
    assert {u.client_name for u in updates} == {"north", "south"}, "only enrolled sites take part"
    assert not any(u.failed for u in updates)
    assert "intruder" not in {u.client_name for u in updates}
    assert intruder_log, "the unenrolled node ran"
    sentence = str(refused.value)
    fingerprint = private_key_fingerprint(certs.nodes["intruder"].private_key)
    assert "refused site 'intruder'" in sentence and fingerprint in sentence and "--enrol intruder.pub" in sentence
    assert "\x1b[" not in sentence and "Exit Code" not in sentence
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            runs = federated_runs(s, run_id)
    finally:
        db.close()
    assert [r.role for r in runs].count("site") == 2 and runs[0].status == "completed"
    assert "data_fingerprint" not in runs[0].final_stats  # no site's policy let its counts leave

    # What crossed the boundary: replies carry weights and numbers, never an image, a path or a file name.
    pushes = [request for path, request, _ in traffic if path.endswith(("/push-messages", "/push-object"))]
    assert pushes, "the sites' replies went through the front"
    forbidden = [str(fl_data).encode(), b"fl-xrays", b".png", b"normal_0", b"pneumonia_0", b"NORMAL", b"PNEUMONIA"]
    forbidden.append(b"data-fingerprint")
    for body in pushes:
        for needle in forbidden:
            assert needle not in body, f"{needle!r} left a site"
    pulled = [response for path, _, response in traffic if path.endswith(("/pull-messages", "/pull-object"))]
    assert pulled and all(str(fl_data).encode() not in body for body in pulled)

    # FedBN, read off the wire: no normalisation tensor left a site (or reached one), the other weights did.
    model = PneumoniaClassifier(backbone="small_cnn")
    norm = sorted(normalisation_keys(model))
    shared = sorted(set(model.state_dict()) - set(norm) - {k for k in model.state_dict() if k.startswith("criterion.")})
    sent = b"".join(pushes)
    assert norm and all(key.encode() not in sent for key in norm), "a normalisation tensor left a site"
    assert all(key.encode() in sent for key in shared), "the shared weights went through the front"
    assert all(key.encode() not in b"".join(pulled) for key in norm)
    # ...and each site kept its own, different from the other's.
    kept = [LocalLayerStore(site_state_dir(node.node_settings()), run_id).load() for node in nodes[:2]]
    assert set(kept[0]) == set(kept[1]) == set(norm)
    assert any(not torch.equal(kept[0][k], kept[1][k]) for k in norm if kept[0][k].is_floating_point())
