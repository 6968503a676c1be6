"""TLS and node authentication with real processes: enrolled sites train, others are refused, runs cannot be
submitted through the exposed address, and nothing but weights and numbers crosses the site boundary."""

from __future__ import annotations

import pytest

from core.events import ClientUpdate
from core.federated.certs import init_federation_certs
from core.federated.control import FlowerControl
from core.federated.nodes import Security, ServerNode, SiteNode
from core.federated.processes import FlowerProcessError, flower_environment, free_port
from core.federated.settings import ServerSettings, SiteSettings
from core.persistence import Database
from core.persistence.repository import federated_runs
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
            server.control.register_node(certs.nodes[name].public_key, name=name)

        # Run submission through the exposed address is refused: the front forwards the Fleet API only.
        outsider = FlowerControl(
            tmp_path / "outsider-home",
            server.front.port,
            flower_environment(tmp_path / "outsider-home"),
            root_certificates=certs.ca_cert,
        )
        with pytest.raises(FlowerProcessError):
            outsider.submit(tiny_plan().run_config(), tmp_path / "outsider")

        for i, name in enumerate(("north", "south", "intruder")):
            site = SiteSettings(
                site_name=name,
                data_path=str(fl_data),
                db_url=db_url,
                server_address=server.fleet_address,
                partition_id=min(i, 1),
                num_partitions=2,
                max_threads=1,
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

        run_id = server.submit(tiny_plan())
        outcome = server.follow(run_id)
        intruder_log = nodes[2].process.log_tail(20_000)
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
    db = Database.open(db_url)
    try:
        with db.begin() as s:
            runs = federated_runs(s, str(run_id))
    finally:
        db.close()
    assert [r.role for r in runs].count("client") == 2 and runs[0].status == "completed"

    # What crossed the boundary: replies carry weights and numbers, never an image, a path or a file name.
    pushes = [request for path, request, _ in traffic if path.endswith(("/push-messages", "/push-object"))]
    assert pushes, "the sites' replies went through the front"
    forbidden = [str(fl_data).encode(), b"fl-xrays", b".png", b"normal_0", b"pneumonia_0", b"NORMAL", b"PNEUMONIA"]
    for body in pushes:
        for needle in forbidden:
            assert needle not in body, f"{needle!r} left a site"
    pulled = [response for path, _, response in traffic if path.endswith(("/pull-messages", "/pull-object"))]
    assert pulled and all(str(fl_data).encode() not in body for body in pulled)
