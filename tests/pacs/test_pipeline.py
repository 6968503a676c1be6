"""Reading a study while it arrives (core.pacs.pipeline) against a real Orthanc, by C-MOVE: every image is read
and answered into the study; a cancel keeps what was read and says so."""

from __future__ import annotations

import threading

import httpx
import pytest
import torch
from pydicom.uid import generate_uid

from core.audit import kinds
from core.audit.entries import entries
from core.audit.key import KEY_DIR_ENV
from core.federated.processes import free_port
from core.inference.models import ReadingModel
from core.model.backbones import build_backbone
from core.pacs.nodes import PacsNode, PacsSettings, save_settings
from core.pacs.pipeline import read_study
from core.persistence import Database
from core.reporting import RunReport
from tests.pacs.orthanc import ORTHANC_AE, OUR_AE, Orthanc
from tests.pacs.studies import chest_image

ROOT = "1.2.826.0.1.3680043.8.498."


@pytest.fixture
def world(orthanc: Orthanc, tmp_path, monkeypatch):
    """A C-MOVE node Orthanc knows at a free port, the user's folders in the test's, a small random model."""
    for name in ("CONFIG", "CACHE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    monkeypatch.setenv(KEY_DIR_ENV, str(tmp_path / "keys"))
    port = free_port()
    httpx.put(
        f"{orthanc.rest}/modalities/pneumofl",
        json={"AET": OUR_AE, "Host": "127.0.0.1", "Port": port},
        trust_env=False,
        timeout=10,
    ).raise_for_status()
    node = PacsNode("main", ORTHANC_AE, "127.0.0.1", orthanc.dicom_port, retrieve="move")
    save_settings(PacsSettings({"main": node}, move_port=port))
    torch.manual_seed(0)
    model = ReadingModel("t", "small_cnn", 32, "0" * 64, RunReport(), backbone=build_backbone("small_cnn").eval())
    db = Database.open(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        yield node, model, db
    finally:
        db.close()


def test_a_study_is_read_and_answered_as_it_arrives(orthanc: Orthanc, world, tmp_path):
    node, model, db = world
    study = generate_uid()
    for n in range(5):
        orthanc.upload(chest_image(tmp_path / f"{n}.dcm", study_uid=study, patient_id="PID-5", seed=n))
    seen: list[tuple[int, int]] = []

    outcome = read_study(
        db, node, study, model, "default", cam=True, uid_root=ROOT, send=True, progress=lambda d, t: seen.append((d, t))
    )

    assert outcome.error is None and outcome.retrieved == 5 and len(outcome.readings) == 5
    assert all(r.probability is not None and r.heatmap is not None for r in outcome.readings)
    assert len(outcome.answers.results) == 5 and not outcome.answers.problems
    assert seen[-1] == (5, 5)
    held = orthanc.instances(study)
    assert sorted(d.Modality for d in held).count("SR") == 5 and sorted(d.Modality for d in held).count("OT") == 5
    with db.begin() as session:
        trail = [e for e in entries(session) if e.kind in (kinds.PACS_RETRIEVED, kinds.RESULTS_STORED)]
    assert [(e.kind, e.details.get("images") or e.details.get("objects")) for e in trail] == [
        (kinds.PACS_RETRIEVED, 5),
        (kinds.RESULTS_STORED, 10),
    ]
    assert "PID-5" not in str([e.details for e in trail])


def test_a_cancel_keeps_what_was_read_and_says_so(orthanc: Orthanc, world, tmp_path):
    node, model, db = world
    study = generate_uid()
    for n in range(3):
        orthanc.upload(chest_image(tmp_path / f"{n}.dcm", study_uid=study, patient_id="PID-6", seed=n))
    cancel = threading.Event()

    outcome = read_study(db, node, study, model, "default", cancel=cancel, on_reading=lambda _r: cancel.set())

    assert 1 <= len(outcome.readings) <= 3 and all(r.probability is not None for r in outcome.readings)
    assert outcome.error is not None and "was cancelled" in str(outcome.error)
    assert not outcome.answers.results  # nothing was asked to be answered
