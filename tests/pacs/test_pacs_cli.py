"""`pneumofl pacs` and `predict --pacs` against a real Orthanc: echo, find, retrieve, read, and answers stored
back into the study as a DICOM SR and a Grad-CAM secondary capture that dciodvfy finds clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from core.audit.entries import entries
from core.config import RunConfig
from core.persistence import Database
from core.persistence.predictions import list_predictions
from core.training.recorded import train_and_record
from tests.e2e.cli import pneumofl
from tests.pacs.orthanc import ORTHANC_AE, OUR_AE, Orthanc
from tests.pacs.studies import chest_image

PATIENT = "PID-4711"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Adult frontal chest radiographs as DICOM, NORMAL/ and PNEUMONIA/: what the run's fingerprint knows."""
    root = tmp_path_factory.mktemp("pacs-xrays")
    study = generate_uid()
    for label, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        for n in range(16):
            view = "PA" if n % 2 else "AP"
            path = root / label / f"{n}.dcm"
            chest_image(path, study_uid=study, patient_id="TRAIN", view=view, pneumonia=pneumonia, size=32, seed=n)
    return root


def _dciodvfy_errors(path) -> list[str]:
    said = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (said.stdout + said.stderr).splitlines() if line.startswith("Error")]


def test_a_study_is_read_from_the_pacs_and_answered_into_it(orthanc: Orthanc, dataset, env, tmp_path):
    with Database.open(env["PNEUMOFL_DB_URL"]) as db:
        config = RunConfig(data_path=str(dataset), backbone="small_cnn", image_size=32, epochs=1, batch_size=8)
        assert train_and_record(config.with_overrides(max_threads=2), db, work_dir=tmp_path / "run").run_id == 1
    study = generate_uid()
    sources = {}
    # An adult PA (like the training images), an adult lateral and a child's PA.
    for n, (modality, view, age) in enumerate((("CR", "PA", "045Y"), ("DX", "LL", "050Y"), ("CR", "PA", "007Y"))):
        path = chest_image(
            tmp_path / "study" / f"{n}.dcm",
            study_uid=study,
            patient_id=PATIENT,
            modality=modality,
            view=view,
            age=age,
            seed=n,
        )
        sources[dcmread(path).SOPInstanceUID] = (modality, view, age)
        orthanc.upload(path)
    other = chest_image(tmp_path / "other.dcm", study_uid=generate_uid(), patient_id="PID-9999", seed=7)
    orthanc.upload(other)

    added = pneumofl(
        "pacs",
        "add",
        "local",
        "--ae",
        ORTHANC_AE,
        "--host",
        "127.0.0.1",
        "--port",
        orthanc.dicom_port,
        env=env,
        check=0,
    )
    assert "Added PACS local" in added.stdout and "pneumofl pacs echo local" in added.stdout
    echoed = pneumofl("pacs", "echo", "local", env=env, check=0)
    assert f"accepts {OUR_AE}" in echoed.stdout
    found = pneumofl("pacs", "find", "local", "--patient", PATIENT, "--modality", "CR,DX", env=env, check=0)
    assert study in found.stdout and "PID-9999" not in found.stdout

    out = tmp_path / "answers"
    read = pneumofl(
        "predict", "--run", "1", "--pacs", "local", "--study", study, "--store-results", "--dicom-out", out,
        "--no-progress", env=env, check=0,
    )  # fmt: skip
    assert "3 image(s) read with run 1" in read.stdout
    assert "Sent 6 DICOM object(s) (3 reports, 3 heatmaps) to PACS local" in read.stderr
    # The lateral and the child carry their warnings, on screen and (below) in their reports.
    assert "2 image(s) differ from what the model was trained on" in read.stdout
    assert "lateral view (LL)" in read.stdout and "patient is child" in read.stdout

    # The PACS now holds the two images and, in the same study, a report and a capture answering each.
    held = orthanc.instances(study)
    assert sorted(d.Modality for d in held) == ["CR", "CR", "DX", "OT", "OT", "OT", "SR", "SR", "SR"]
    reports = [d for d in held if d.Modality == "SR"]
    captures = [d for d in held if d.Modality == "OT"]
    assert len(reports) == 3 and len(captures) == 3
    referenced = set()
    warned = {}
    for report in reports:
        assert report.PatientID == PATIENT and report.StudyInstanceUID == study
        items = report.ContentSequence
        text = " ".join(str(getattr(item, "TextValue", "")) for item in items)
        assert "NOT FOR DIAGNOSTIC USE" in text and "weights SHA-256" in text
        (image_item,) = [item for item in items if item.ValueType == "IMAGE"]
        source_uid = image_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        referenced.add(source_uid)
        warned[sources[source_uid][1:]] = [
            str(item.TextValue) for item in items if item.ConceptNameCodeSequence[0].CodeValue == "PNEUMOFL-W"
        ]
        (probability,) = [item for item in items if item.ValueType == "NUM"]
        assert 0.0 <= float(probability.MeasuredValueSequence[0].NumericValue) <= 1.0
    assert referenced == set(sources)
    assert warned[("PA", "045Y")] == []
    assert len(warned[("LL", "050Y")]) == 1 and "lateral view" in warned[("LL", "050Y")][0]
    assert len(warned[("PA", "007Y")]) == 1 and "patient is child" in warned[("PA", "007Y")][0]
    for capture in captures:
        assert capture.PatientID == PATIENT and capture.BurnedInAnnotation == "YES"
        assert capture.PhotometricInterpretation == "YBR_FULL_422" and capture.pixel_array.shape[-1] == 3  # JPEG
        assert "NOT FOR DIAGNOSTIC USE" in capture.ImageComments

    # The same objects as files, which dicom3tools' validator finds free of errors.
    written = sorted(out.glob("*.dcm"))
    assert len(written) == 6
    for path in written:
        assert _dciodvfy_errors(path) == [], path

    # Each reading is recorded with the UIDs of its answers; the audit trail has digests, never the patient ID.
    with Database.open(env["PNEUMOFL_DB_URL"]) as db:
        with db.begin() as session:
            rows = list_predictions(session, run_id=1)
            trail = entries(session)
    answered = {(r["report_uid"], r["capture_uid"]) for r in rows}
    assert sorted(bool(r["warnings"]) for r in rows) == [False, True, True]
    assert {r.SOPInstanceUID for r in reports} == {a for a, _ in answered}
    assert {c.SOPInstanceUID for c in captures} == {b for _, b in answered}
    kinds_seen = [e.kind for e in trail]
    assert {"pacs_queried", "pacs_retrieved", "results_stored"} <= set(kinds_seen)
    pacs_entries = [e for e in trail if e.kind.startswith("pacs_") or e.kind == "results_stored"]
    assert all(PATIENT not in str(e.details) and "Doe" not in str(e.details) for e in pacs_entries)
    digests = {d for e in pacs_entries for d in e.details["patient_digests"]}
    assert len(digests) == 1  # the same patient, the same digest in every entry
    log_text = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.log"))
    assert PATIENT not in log_text and "Doe^Jane" not in log_text

    # The run shows what it was trained on: the fingerprint the warnings come from.
    shown = pneumofl("runs", "show", "1", env=env, check=0).stdout
    assert "Training data fingerprint (" in shown and "age band: adult" in shown and "PA" in shown and "AP" in shown

    # The retrieved images are gone from the cache after reading (the default).
    cache = tmp_path / "cache" / "pneumofl" / "pacs"
    assert cache.is_dir() and list(cache.iterdir()) == []


def test_a_pacs_that_refuses_or_does_not_answer_is_one_sentence(orthanc: Orthanc, env, tmp_path):
    port = str(orthanc.dicom_port)
    cases = {
        "wrongae": (["--ae", "NOTORTHANC", "--port", port], "refused the association: it is not called NOTORTHANC"),
        "stranger": (
            ["--ae", ORTHANC_AE, "--port", port, "--our-ae", "STRANGER"],
            "does not know our AE title STRANGER",
        ),
        "closed": (["--ae", ORTHANC_AE, "--port", "9"], "did not answer: check the host and port"),
    }
    for name, (options, sentence) in cases.items():
        pneumofl("pacs", "add", name, "--host", "127.0.0.1", *options, env=env, check=0)
        said = pneumofl("pacs", "echo", name, env=env, check=2)
        assert sentence in said.stderr and len(said.stderr.strip().splitlines()) == 1, said.stderr
    unknown = pneumofl("pacs", "echo", "nowhere", env=env, check=2)
    assert "No PACS called 'nowhere'" in unknown.stderr and "pacs add nowhere" in unknown.stderr
    bad = pneumofl("pacs", "add", "x", "--ae", "A" * 17, "--host", "h", "--port", "104", env=env, check=2)
    assert "--ae" in bad.stderr and "1 to 16" in bad.stderr
    moving = pneumofl(
        "pacs",
        "add",
        "mover",
        "--ae",
        ORTHANC_AE,
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--retrieve",
        "move",
        env=env,
        check=0,
    )
    assert "C-MOVE: the PACS must know PNEUMOFL at this workstation's address, port 11112" in moving.stdout
    assert "C-MOVE" in pneumofl("pacs", "list", env=env, check=0).stdout
    privileged = pneumofl("pacs", "settings", "--move-port", "104", env=env, check=2)
    assert "C-MOVE port 104: use 1024 to 65535" in privileged.stderr
    assert (
        "C-MOVE port (where a PACS sends images): 11113"
        in pneumofl("pacs", "settings", "--move-port", "11113", env=env, check=0).stdout
    )
    mixed = pneumofl("predict", "--run", "1", "--pacs", "wrongae", env=env, check=2)
    assert "--study" in mixed.stderr
    assert shutil.which("dciodvfy") is not None  # the validator the answers are checked with is installed
