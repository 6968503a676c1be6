import ipaddress
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from core.federated.certs import (
    CertificateError,
    add_node_key,
    init_federation_certs,
    public_key_fingerprint,
)

HOSTS = ["fl.example.org", "10.0.0.5"]


@pytest.fixture
def fed(tmp_path):
    return init_federation_certs(tmp_path / "fed", HOSTS, ["site-a", "site_b"])


def _cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_writes_the_documented_layout(fed, tmp_path):
    root = tmp_path / "fed"
    assert fed.ca_cert == root / "ca.pem" and fed.server_key == root / "server.key"
    assert sorted(fed.nodes) == ["site-a", "site_b"]
    assert fed.nodes["site-a"].private_key == root / "nodes" / "site-a.key"
    assert fed.nodes["site-a"].public_key == root / "nodes" / "site-a.pub"
    assert not list(root.rglob(".*.tmp"))


def test_ca_and_server_certificates_load_and_chain(fed):
    ca, server = _cert(fed.ca_cert), _cert(fed.server_cert)
    for key_path in (fed.ca_key, fed.server_key):
        assert isinstance(serialization.load_pem_private_key(key_path.read_bytes(), None), ec.EllipticCurvePrivateKey)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    server.verify_directly_issued_by(ca)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    # The web-PKI verifier is strict about key usage, key identifiers and SAN; every address must pass it.
    verifier_store = Store([ca])
    for name in (
        x509.DNSName("fl.example.org"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.5")),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ):
        PolicyBuilder().store(verifier_store).build_server_verifier(name).verify(server, [])


def test_server_certificate_names_every_host_plus_loopback(fed):
    san = _cert(fed.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    ]


def test_loopback_is_not_duplicated_and_ipv6_brackets_are_accepted(tmp_path):
    fed = init_federation_certs(tmp_path, ["localhost", "127.0.0.1", "[::1]"], [])
    san = _cert(fed.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


@pytest.mark.parametrize("bad", ["https://fl.example.org", "fl.example.org:9092", "two words", ""])
def test_host_with_scheme_port_or_spaces_is_refused(tmp_path, bad):
    with pytest.raises(CertificateError, match="without scheme or port"):
        init_federation_certs(tmp_path, [bad], [])
    assert not (tmp_path / "ca.pem").exists()


def test_node_keys_are_what_flower_loads(fed):
    node = fed.nodes["site-a"]
    private = serialization.load_ssh_private_key(node.private_key.read_bytes(), None)  # as flower-supernode does
    public = serialization.load_ssh_public_key(node.public_key.read_bytes())  # as flwr supernode register does
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert node.private_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert node.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert try_load_public_key(node.public_key) == public_key_to_bytes(private.public_key())


def test_private_files_are_owner_only(fed):
    for path in (fed.ca_key, fed.server_key, *(n.private_key for n in fed.nodes.values())):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(fed.ca_cert.stat().st_mode) & 0o044  # certificates and public keys stay shareable


def test_existing_federation_is_not_overwritten_without_force(fed, tmp_path):
    before = fed.ca_cert.read_bytes()
    with pytest.raises(CertificateError) as info:
        init_federation_certs(tmp_path / "fed", HOSTS, ["site-a"])
    assert str(fed.ca_cert) in str(info.value) and "--force" in str(info.value)
    assert fed.ca_cert.read_bytes() == before
    again = init_federation_certs(tmp_path / "fed", HOSTS, ["site-a"], force=True)
    assert again.ca_cert.read_bytes() != before
    assert stat.S_IMODE(again.ca_key.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["site a", "../escape", "", "é", "x" * 65])
def test_bad_node_name_is_refused_with_a_clear_message(tmp_path, fed, bad):
    with pytest.raises(CertificateError, match=r"Invalid site name .*letters, digits, '-' or '_'"):
        add_node_key(tmp_path / "fed", bad)
    with pytest.raises(CertificateError, match="Invalid site name"):
        init_federation_certs(tmp_path / "other", HOSTS, [bad])
    assert not (tmp_path / "other").exists()


def test_duplicate_node_names_are_refused(tmp_path):
    with pytest.raises(CertificateError, match="unique"):
        init_federation_certs(tmp_path, HOSTS, ["a", "a"])


def test_add_node_key(fed, tmp_path):
    node = add_node_key(tmp_path / "fed", "site-c")
    assert node.name == "site-c" and node.private_key.is_file() and node.public_key.is_file()
    assert stat.S_IMODE(node.private_key.stat().st_mode) == 0o600
    assert try_load_public_key(node.public_key)
    with pytest.raises(CertificateError, match=r"site-c\.key already exists"):
        add_node_key(tmp_path / "fed", "site-c")
    with pytest.raises(CertificateError, match=r"holds no ca\.pem"):
        add_node_key(tmp_path / "elsewhere", "site-d")


def test_fingerprint_is_short_stable_and_ignores_the_comment(fed, tmp_path):
    pub = fed.nodes["site-a"].public_key
    fingerprint = public_key_fingerprint(pub)
    assert len(fingerprint) == 19 and fingerprint.count(":") == 3
    key_type, blob, _comment = pub.read_text().split()
    renamed = tmp_path / "renamed.pub"
    renamed.write_text(f"{key_type} {blob} someone@elsewhere\n")
    assert public_key_fingerprint(renamed) == fingerprint
    assert public_key_fingerprint(fed.nodes["site_b"].public_key) != fingerprint
    with pytest.raises(CertificateError, match="not a readable OpenSSH public key"):
        public_key_fingerprint(fed.ca_cert)


def tls_pair(fed):
    """A server context with the federation's server certificate, a client trusting its CA, a socket pair."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(fed.server_cert, fed.server_key)
    client_ctx = ssl.create_default_context(cafile=str(fed.ca_cert))
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)
    return server_ctx, client_ctx, server_sock, client_sock


@pytest.mark.parametrize("server_hostname", ["localhost", "fl.example.org", "127.0.0.1", "10.0.0.5"])
def test_tls_handshake_with_the_generated_certificates(fed, server_hostname):
    server_ctx, client_ctx, server_sock, client_sock = tls_pair(fed)

    def serve_one_line():
        with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
            tls.sendall(tls.recv(64).upper())

    with ThreadPoolExecutor(1) as pool:
        served = pool.submit(serve_one_line)
        try:
            with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
                tls.sendall(b"ping")
                assert tls.recv(64) == b"PING"
                assert tls.getpeercert()["subjectAltName"]
        finally:
            client_sock.close()
        served.result(timeout=5)


def test_tls_handshake_fails_for_a_name_not_in_the_certificate(fed):
    server_ctx, client_ctx, server_sock, client_sock = tls_pair(fed)

    def serve():
        with pytest.raises(ssl.SSLError), server_ctx.wrap_socket(server_sock, server_side=True):
            pass

    with ThreadPoolExecutor(1) as pool:
        served = pool.submit(serve)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                client_ctx.wrap_socket(client_sock, server_hostname="other.example.org")
        finally:
            client_sock.close()
            server_sock.close()
        served.result(timeout=5)
