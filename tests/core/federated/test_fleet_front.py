import contextlib
import socket
import ssl
import threading
import time
from base64 import b64decode

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from flwr.proto.fleet_pb2 import PullMessagesRequest
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, verify_signature
from flwr.supercore.protobuf.client import ProtobufRequestContext
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from core.federated.certs import init_federation_certs
from core.federated.fleet_front import FleetFront, FleetFrontError


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return init_federation_certs(tmp_path_factory.mktemp("fed"), ["fl.example.org"], ["site-a"])


@contextlib.contextmanager
def serve_in_thread(app, certfile, keyfile):
    """Run an ASGI app under uvicorn on a free loopback port; always stopped, even if the test fails."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", ssl_certfile=certfile, ssl_keyfile=keyfile
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "test upstream did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def upstream(certs):
    """A stand-in SuperLink over TLS that records every request and echoes a fixed protobuf-like reply."""
    seen = []

    async def record(scope, receive, send):
        request = Request(scope, receive)
        body = await request.body()
        seen.append({"method": request.method, "path": scope["path"], "headers": request.headers, "body": body})
        status = int(request.headers.get("x-want-status", "200"))
        reply = Response(b"\x08\x01reply", status_code=status, media_type="application/protobuf")
        reply.headers["x-from-upstream"] = "yes"
        await reply(scope, receive, send)

    with serve_in_thread(Router(default=record), str(certs.server_cert), str(certs.server_key)) as port:
        yield seen, port


@pytest.fixture
def front(certs, upstream):
    _seen, port = upstream
    fleet_front = FleetFront(
        "127.0.0.1", 0, f"https://127.0.0.1:{port}", certs.server_cert, certs.server_key, upstream_ca=certs.ca_cert
    )
    try:
        fleet_front.start()
        yield fleet_front
    finally:
        fleet_front.stop()


@pytest.fixture
def client(certs, front):
    verify = ssl.create_default_context(cafile=str(certs.ca_cert))
    with httpx.Client(base_url=f"https://localhost:{front.port}", verify=verify, trust_env=False, timeout=10) as c:
        yield c


def test_fleet_call_signed_like_a_supernode_reaches_the_superlink_intact(certs, upstream, client):
    seen, upstream_port = upstream
    private = serialization.load_ssh_private_key(certs.nodes["site-a"].private_key.read_bytes(), None)
    message = PullMessagesRequest()
    message.node.node_id = 42
    request = client.build_request(
        "POST",
        "/v1/fleet/pull-messages",
        content=message.SerializeToString(),
        headers={"content-type": "application/protobuf", "x-custom": "kept"},
    )
    # Flower's own interceptor adds the flwr-public-key / flwr-timestamp / flwr-signature headers.
    response = NodeAuthHttpInterceptor(private, private.public_key()).intercept(
        ProtobufRequestContext("PullMessages", message, request), lambda context: client.send(context.request)
    )

    assert response.status_code == 200
    assert response.content == b"\x08\x01reply"
    assert response.headers["x-from-upstream"] == "yes"
    assert response.headers["content-type"] == "application/protobuf"
    assert len(seen) == 1
    got = seen[0]
    assert (got["method"], got["path"], got["body"]) == ("POST", "/v1/fleet/pull-messages", message.SerializeToString())
    for name in ("content-type", "x-custom", "flwr-public-key", "flwr-timestamp", "flwr-signature"):
        assert got["headers"][name] == request.headers[name]
    assert got["headers"]["host"] == f"127.0.0.1:{upstream_port}"
    # What the SuperLink's node_auth.authenticate_node checks still holds after the hop.
    public_key = bytes_to_public_key(b64decode(got["headers"]["flwr-public-key"]))
    signature = b64decode(got["headers"]["flwr-signature"])
    assert verify_signature(public_key, got["headers"]["flwr-timestamp"].encode("ascii"), signature)


def test_upstream_status_is_passed_back(upstream, client):
    response = client.post("/v1/fleet/activate-node", content=b"x", headers={"x-want-status": "401"})
    assert response.status_code == 401 and response.content == b"\x08\x01reply"


NOT_FORWARDED = [
    ("POST", "/v1/control/start-run"),
    ("POST", "/v1/control/register-node"),
    ("POST", "/v1/runtime/pull-task-input"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/fleet/pull-messages"),
    ("PUT", "/v1/fleet/pull-messages"),
    ("POST", "/v1/fleet/%2e%2e/control/start-run"),  # decoded to /v1/fleet/../control/start-run by the server
    ("POST", "/v1/fleet/pull-messages/extra"),
    ("POST", "/v1/fleet/"),
    ("POST", "/"),
]


def test_everything_but_fleet_posts_is_404_and_never_forwarded(upstream, client):
    seen, _port = upstream
    for method, path in NOT_FORWARDED:  # one front for all cases: starting servers dominates the run time
        response = client.request(method, path, content=b"payload" if method != "GET" else None)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"].startswith("text/plain"), (method, path)
    assert seen == []


def test_unreachable_superlink_gives_502(certs):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead_port = probe.getsockname()[1]  # closed again before the front dials it
    with FleetFront("127.0.0.1", 0, f"http://127.0.0.1:{dead_port}", None, None) as fleet_front:
        response = httpx.post(f"http://127.0.0.1:{fleet_front.port}/v1/fleet/get-run", content=b"", trust_env=False)
    assert response.status_code == 502


def test_taken_port_gives_a_clear_error(certs):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        fleet_front = FleetFront("127.0.0.1", port, "http://127.0.0.1:1", certs.server_cert, certs.server_key)
        try:
            with pytest.raises(FleetFrontError, match=rf"127\.0\.0\.1:{port}.*choose another port"):
                fleet_front.start()
        finally:
            fleet_front.stop()


def test_unreadable_certificate_gives_a_clear_error(certs, tmp_path):
    missing = tmp_path / "missing.pem"
    fleet_front = FleetFront("127.0.0.1", 0, "https://127.0.0.1:1", missing, certs.server_key)
    with pytest.raises(FleetFrontError, match=r"TLS files for the fleet front on 127\.0\.0\.1:0"):
        fleet_front.start()
    fleet_front = FleetFront("127.0.0.1", 0, "https://127.0.0.1:1", None, None, upstream_ca=missing)
    with pytest.raises(FleetFrontError, match="No such file"):
        fleet_front.start()


def test_stop_is_idempotent_and_frees_the_port():
    fleet_front = FleetFront("127.0.0.1", 0, "http://127.0.0.1:1", None, None)
    fleet_front.start()
    port = fleet_front.port
    fleet_front.stop()
    fleet_front.stop()
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_plain_http_is_refused_off_loopback():
    with pytest.raises(ValueError, match="without TLS"):
        FleetFront("0.0.0.0", 0, "http://127.0.0.1:1", None, None)
