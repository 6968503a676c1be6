"""DICOM over TLS against a real Orthanc that accepts only TLS: `pacs add --tls-ca` echoes and searches; a PACS
whose certificate our CA did not sign, and a plain association to a TLS port, are one sentence each."""

from __future__ import annotations

import pytest

from core.federated.certs import init_federation_certs
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
