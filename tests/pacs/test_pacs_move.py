"""C-MOVE against a real Orthanc: the PACS opens an association to our storage SCP, and only its images of the
study asked for are kept; another program's images, a busy port and a PACS with our wrong port are sentences."""

from __future__ import annotations

import socket
import threading

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from core.federated.processes import free_port
from core.pacs.network import PacsError
from core.pacs.nodes import PacsNode
from core.pacs.retrieve import XRAY_STORAGE, StorageScp, StudyReceiver, retrieve_study
from tests.pacs.orthanc import ORTHANC_AE, OUR_AE, Orthanc
from tests.pacs.studies import chest_image


def _node(orthanc: Orthanc) -> PacsNode:
    return PacsNode("local", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port, retrieve="move")


def test_c_move_brings_the_studys_xrays_to_our_port(orthanc: Orthanc, tmp_path):
    study = generate_uid()
    sent = [chest_image(tmp_path / "study" / f"{n}.dcm", study_uid=study, patient_id="PID-1", seed=n) for n in range(3)]
    for path in sent:
        orthanc.upload(path)
    orthanc.upload(chest_image(tmp_path / "other.dcm", study_uid=generate_uid(), patient_id="PID-2", seed=9))
    port = free_port()
    orthanc.send_moves_to(port)
    seen: list[tuple[int, int]] = []

    files = retrieve_study(
        _node(orthanc), study, tmp_path / "cache", move_port=port, progress=lambda d, t: seen.append((d, t))
    )

    expected = {dcmread(p).SOPInstanceUID: dcmread(p) for p in sent}
    assert sorted(f.stem for f in files) == sorted(expected)  # the study's three, not the other study's
    for path in files:
        got = dcmread(path)
        assert got.StudyInstanceUID == study and got.PixelData == expected[got.SOPInstanceUID].PixelData
    assert seen[-1] == (3, 3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(f.name for f in files)  # no .part left
    with socket.create_connection(("127.0.0.1", orthanc.dicom_port)):  # the PACS is still there ...
        pass
    with pytest.raises(OSError):  # ... and our port is closed again
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_our_storage_port_keeps_only_the_pacss_images_of_the_study(orthanc: Orthanc, tmp_path):
    study = generate_uid()
    ours = chest_image(tmp_path / "ours.dcm", study_uid=study, patient_id="PID-1", seed=1)
    foreign = chest_image(tmp_path / "foreign.dcm", study_uid=generate_uid(), patient_id="PID-3", seed=2)
    port = free_port()

    def push(path, called: str = OUR_AE) -> int | None:
        """Another program on this machine, sending an image to our storage SCP while a C-MOVE runs."""
        ae = AE(ae_title="INTRUDER")
        for uid in XRAY_STORAGE:
            ae.add_requested_context(uid)
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if not assoc.is_established:
            return None
        try:
            return int(assoc.send_c_store(dcmread(path)).Status)
        finally:
            assoc.release()

    folder = tmp_path / "cache"
    folder.mkdir()
    node = _node(orthanc)
    # The PACS's address is 127.0.0.1, as is the intruder's: the study is what gives it away.
    receiver = StudyReceiver(folder, study, 1, None, frozenset({"127.0.0.1"}))
    with StorageScp(node, port, receiver):
        assert push(foreign) == 0x0124
        assert push(ours, called="SOMEONE") is None  # an association not called by our AE title is rejected
    assert list(folder.iterdir()) == [] and receiver.refused == 1
    # A PACS elsewhere: even an image of the study, from this machine, is refused.
    receiver = StudyReceiver(folder, study, 1, None, frozenset({"10.20.30.40"}))
    with StorageScp(node, port, receiver):
        assert push(ours) == 0x0124
    assert list(folder.iterdir()) == []
    receiver = StudyReceiver(folder, study, 1, None, frozenset({"127.0.0.1"}))
    with StorageScp(node, port, receiver):
        assert push(ours) == 0x0000
    assert [p.stem for p in folder.iterdir()] == [dcmread(ours).SOPInstanceUID]


def test_a_busy_port_or_a_wrong_port_at_the_pacs_is_one_sentence(orthanc: Orthanc, tmp_path):
    study = generate_uid()
    orthanc.upload(chest_image(tmp_path / "a.dcm", study_uid=study, patient_id="PID-1"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PacsError, match=f"Cannot listen on port {port}.*--move-port"):
            retrieve_study(_node(orthanc), study, tmp_path / "busy", move_port=port)
    assert not (tmp_path / "busy").exists()
    port = free_port()
    orthanc.send_moves_to(free_port())  # the PACS has us at another port: its images go nowhere
    with pytest.raises(PacsError, match=f"to PNEUMOFL at port {port}: check that it has PNEUMOFL at this work"):
        retrieve_study(_node(orthanc), study, tmp_path / "elsewhere", move_port=port)
    assert not (tmp_path / "elsewhere").exists()


def test_a_cancelled_move_leaves_nothing(orthanc: Orthanc, tmp_path):
    study = generate_uid()
    for n in range(3):
        orthanc.upload(chest_image(tmp_path / f"{n}.dcm", study_uid=study, patient_id="PID-1", seed=n))
    port = free_port()
    orthanc.send_moves_to(port)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PacsError, match="was cancelled"):
        retrieve_study(_node(orthanc), study, tmp_path / "cache", move_port=port, cancel=cancel)
    assert not (tmp_path / "cache").exists()
