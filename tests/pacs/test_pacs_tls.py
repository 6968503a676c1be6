"""DICOM over TLS against a real Orthanc that accepts only TLS: `pacs add --tls-ca` echoes and searches; a PACS
whose certificate our CA did not sign, and a plain association to a TLS port, are one sentence each. A PACS that
requires mutual TLS accepts our certificate only when its CA signed it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.federated.certs import init_federation_certs
from core.pacs.network import PacsError, echo
from core.pacs.nodes import PacsNode
from tests.e2e.cli import pneumofl
from tests.pacs.orthanc import ORTHANC_AE, Orthanc


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory):
    certs = init_federation_certs(tmp_path_factory.mktemp("pacs-certs"), ["127.0.0.1"], [])
    other = init_federation_certs(tmp_path_factory.mktemp("other-ca"), ["127.0.0.1"], [])
    server = Orthanc(
        tmp_path_factory.mktemp("orthanc-tls"),
        {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.server_cert),
            "DicomTlsPrivateKey": str(certs.server_key),
            "DicomTlsTrustedCertificates": str(certs.ca_cert),
            "DicomTlsRemoteCertificateRequired": False,  # a workstation without a certificate of its own
        },
    ).start()
    try:
        yield server, certs, other
    finally:
        server.stop()


def test_tls_pacs_echoes_with_its_ca_and_refuses_others_in_a_sentence(tls_orthanc, env):
    server, certs, other = tls_orthanc
    port = str(server.dicom_port)
    common = ("--ae", ORTHANC_AE, "--host", "127.0.0.1", "--port", port)
    pneumofl("pacs", "add", "secure", *common, "--tls-ca", str(certs.ca_cert), env=env, check=0)
    echoed = pneumofl("pacs", "echo", "secure", env=env, check=0)
    assert "answered and accepts PNEUMOFL" in echoed.stdout
    found = pneumofl("pacs", "find", "secure", "--date", "20260101-20261231", env=env, check=0)
    assert "No study" in found.stderr  # the query itself went over TLS and came back empty

    pneumofl("pacs", "add", "stranger", *common, "--tls-ca", str(other.ca_cert), env=env, check=0)
    refused = pneumofl("pacs", "echo", "stranger", env=env, check=2)
    assert "certificates match" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    pneumofl("pacs", "add", "plain", *common, env=env, check=0)
    plain = pneumofl("pacs", "echo", "plain", env=env, check=2)
    assert "PACS plain" in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr + plain.stderr


def _client_certificate(certs, folder: Path, name: str = "workstation") -> tuple[Path, Path]:
    """A certificate for this workstation signed by ``certs``' CA, as a hospital's PKI would issue one."""
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_a_pacs_that_requires_our_certificate_accepts_only_one_its_ca_signed(tmp_path):
    certs = init_federation_certs(tmp_path / "pacs-ca", ["127.0.0.1"], [])
    other = init_federation_certs(tmp_path / "other-ca", ["127.0.0.1"], [])
    server = Orthanc(
        tmp_path / "orthanc",
        {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs.server_cert),
            "DicomTlsPrivateKey": str(certs.server_key),
            "DicomTlsTrustedCertificates": str(certs.ca_cert),
            "DicomTlsRemoteCertificateRequired": True,  # mutual TLS: the PACS checks who we are too
        },
    ).start()
    try:
        ours = _client_certificate(certs, tmp_path / "ours")
        forged = _client_certificate(other, tmp_path / "forged")  # same name, a CA the PACS does not trust

        def node(cert_and_key: tuple[Path, Path] | None) -> PacsNode:
            cert, key = (str(p) for p in cert_and_key) if cert_and_key else ("", "")
            return PacsNode(
                "mutual",
                ORTHANC_AE,
                "127.0.0.1",
                server.dicom_port,
                tls_ca=str(certs.ca_cert),
                tls_cert=cert,
                tls_key=key,
            )

        echo(node(ours))  # answered: the association and the echo went over mutual TLS
        for who in (None, forged):
            with pytest.raises(PacsError) as refused:
                echo(node(who))
            assert "certificates match" in str(refused.value) and "\n" not in str(refused.value)
    finally:
        server.stop()
