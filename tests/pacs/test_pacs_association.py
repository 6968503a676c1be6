"""Associations with a real Orthanc that refuses us: every refusal reads as one, with the PACS's reason."""

from __future__ import annotations

import pytest

from core.pacs.network import PacsError, echo
from core.pacs.nodes import PacsNode
from tests.pacs.orthanc import ORTHANC_AE, Orthanc


def test_a_pacs_that_rejects_and_hangs_up_at_once_is_reported_as_rejecting(orthanc: Orthanc):
    # Orthanc closes the connection right after its A-ASSOCIATE-RJ. pynetdicom 3.0 then calls 1 association in 10
    # aborted, and the user was told to check the certificates instead of asking for our AE title to be added.
    stranger = PacsNode("main", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port, our_ae="STRANGER")
    said = []
    for _ in range(40):
        with pytest.raises(PacsError) as refused:
            echo(stranger)
        said.append(str(refused.value))
    expected = (
        f"PACS main (ORTHANC@127.0.0.1:{orthanc.dicom_port}) refused the association: it does not know our AE title "
        "STRANGER: ask its administrator to add STRANGER (at this workstation's address)."
    )
    assert said == [expected] * 40
