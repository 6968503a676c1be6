"""Reading a PACS study end to end: retrieve into a private cache, answer each image as DICOM, send, audit.

Audit entries say who, when, which PACS and how many studies or images, and a keyed digest of the patient ID
(HMAC with the database's audit key): the same patient gets the same digest in this database's trail, and nobody
without the key can recover the ID from it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from pydicom import dcmread
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from core.audit.key import load_or_create_key
from core.audit.trail import record
from core.errors import PneumoFLError
from core.pacs.network import StudyMatch, StudyQuery
from core.pacs.nodes import PacsNode, load_settings
from core.pacs.results import DicomResults, dicom_results, write_results
from core.persistence import Database
from core.persistence.engine import pid_alive
from core.persistence.identity import database_identity

# What answers are sent as: highdicom's SRs in explicit little endian, captures as JPEG (core.pacs.results).
RESULT_CONTEXTS = [
    (ComprehensiveSRStorage, [ExplicitVRLittleEndian]),
    (SecondaryCaptureImageStorage, [JPEGBaseline8Bit]),
]

if TYPE_CHECKING:
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading


def cache_root() -> Path:
    """Where retrieved studies wait to be read: the user's cache folder, readable by the user only."""
    root = Path(platformdirs.user_cache_dir("pneumofl")) / "pacs"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def retrieval_folder() -> Path:
    """A new, empty folder under :func:`cache_root` for one retrieval, named after the process that owns it.

    Studies that a crashed or killed process left in the cache are removed first (unless the user keeps retrieved
    studies): a power cut during a reading must not leave a patient's images on the workstation for good.
    """
    root, host = cache_root(), socket.gethostname()
    if not load_settings().keep_retrieved:
        for child in root.iterdir():  # PID-UUID-HOST; a shared home may hold other workstations' retrievals
            owner, _, rest = child.name.partition("-")
            if owner.isdigit() and rest.partition("-")[2] == host and not pid_alive(int(owner)):
                shutil.rmtree(child, ignore_errors=True)
    folder = root / f"{os.getpid()}-{uuid.uuid4().hex}-{host}"
    folder.mkdir(mode=0o700)
    return folder


def forget_retrieval(folder: Path) -> None:
    """Empty a read study from the cache, unless the user keeps retrieved studies (``pacs settings``)."""
    if not load_settings().keep_retrieved:
        shutil.rmtree(folder, ignore_errors=True)


def empty_cache() -> int:
    """Remove every retrieved study still in the cache; return how many folders were removed."""
    removed = 0
    for child in cache_root().iterdir():
        shutil.rmtree(child, ignore_errors=True)
        removed += 1
    return removed


def patient_digest(db: Database, patient_id: str) -> str:
    """A keyed digest of ``patient_id`` (16 hex characters) for the audit trail; never the ID itself."""
    with db.begin() as session:
        identity = database_identity(session)
    key = load_or_create_key(identity)
    return hmac.new(key, b"patient-id:" + patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def audit_pacs(db: Database, kind: str, node: PacsNode, *, patient_ids: Iterable[str] = (), **counts: int) -> None:
    """One audit entry for a query, retrieval or store on ``node``: counts and patient digests, no identifiers."""
    digests = sorted({patient_digest(db, p) for p in patient_ids if p})
    record(db, kind, {"pacs": node.name, "address": node.address, **counts, "patient_digests": digests})


@dataclass
class Answers:
    """The DICOM results of a set of readings, by the image they answer."""

    results: dict[Path, DicomResults] = field(default_factory=dict)
    problems: dict[Path, str] = field(default_factory=dict)  # why an image got no DICOM answer

    def uids(self) -> dict[Path, tuple[str, str]]:
        """``(report, capture)`` SOP instance UIDs by image, as recorded with each prediction."""
        return {path: result.instance_uids for path, result in self.results.items()}


def answer(
    readings: Iterable[Reading],
    model: ReadingModel,
    uid_root: str,
    on_result: Callable[[DicomResults], None] | None = None,
) -> Answers:
    """The SR and secondary capture of every DICOM reading; PNG/JPEG and unreadable images are listed as problems.

    ``on_result`` gets each answer as soon as it is made (:func:`answer_and_send` sends it while the next is made).
    """
    answers = Answers()
    for reading in readings:
        answer_one(reading, model, uid_root, answers, on_result)
    return answers


def answer_one(
    reading: Reading,
    model: ReadingModel,
    uid_root: str,
    answers: Answers,
    on_result: Callable[[DicomResults], None] | None = None,
) -> None:
    """Add the SR and capture of ``reading`` to ``answers`` (or why it has none); hand them to ``on_result``."""
    if reading.probability is None:
        answers.problems[reading.path] = reading.error or "not read"
    elif reading.path.suffix.lower() != ".dcm":
        answers.problems[reading.path] = "not a DICOM image: it has no study to answer into"
    else:
        try:
            answers.results[reading.path] = result = dicom_results(reading, model, uid_root)
        except PneumoFLError as exc:
            answers.problems[reading.path] = str(exc)
            return
        if on_result is not None:
            on_result(result)


def write_answers(answers: Answers, folder: Path) -> list[Path]:
    """Write every answer into ``folder`` (see :func:`core.pacs.results.write_results`)."""
    return [path for result in answers.results.values() for path in write_results(result, folder)]


def study_patient_ids(files: Iterable[Path]) -> list[str]:
    """The patient IDs of retrieved files (read for the audit digest only, never shown)."""
    ids = []
    for path in files:
        try:
            ids.append(str(dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID", "")))
        except Exception:  # noqa: BLE001 - a file we cannot read has no ID to digest
            continue
    return ids


def search(db: Database, node: PacsNode, query: StudyQuery) -> list[StudyMatch]:
    """C-FIND studies on ``node`` and audit the query (with the matched patients' digests)."""
    from core.audit import kinds
    from core.pacs.network import find_studies

    studies = find_studies(node, query)
    audit_pacs(db, kinds.PACS_QUERIED, node, patient_ids=[s.patient_id for s in studies], studies=len(studies))
    return studies


def fetch_study(
    db: Database,
    node: PacsNode,
    study_uid: str,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    folder: Path | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> tuple[Path, list[Path]]:
    """Retrieve the study's X-rays (C-GET or C-MOVE, as the node says) into a fresh cache folder and audit it.

    Returns the folder (``folder``, or a new one of the cache) and its files. ``on_file`` gets each file as it
    arrives (see :func:`core.pacs.retrieve.retrieve_study`).
    """
    from core.audit import kinds
    from core.pacs.retrieve import retrieve_study

    folder = folder or retrieval_folder()
    move_port = load_settings().move_port
    files = retrieve_study(
        node, study_uid, folder, cancel=cancel, progress=progress, move_port=move_port, on_file=on_file
    )
    audit_pacs(db, kinds.PACS_RETRIEVED, node, patient_ids=study_patient_ids(files), studies=1, images=len(files))
    return folder, files


@contextmanager
def sending(db: Database, node: PacsNode) -> Iterator[Callable[[DicomResults], None]]:
    """A ``send(result)`` that C-STOREs each answer's SR and capture on ``node`` in the background.

    On leaving, it waits for the last and audits what was sent (even when sending failed part way). Raises the
    first failure to send (a PacsError); nothing after it is sent.
    """
    from core.audit import kinds
    from core.pacs.network import StoreStream

    stream = StoreStream(node, RESULT_CONTEXTS)
    patients: list[str] = []

    def send(result: DicomResults) -> None:
        stream.put(result.report)
        stream.put(result.capture)
        patients.append(str(result.report.get("PatientID", "")))

    try:
        yield send
    finally:
        try:
            stream.close()  # waits for the last object; raises the sender's failure
        finally:
            if stream.sent:
                audit_pacs(db, kinds.RESULTS_STORED, node, patient_ids=patients, objects=stream.sent)


def answer_and_send(
    db: Database, node: PacsNode, readings: Iterable[Reading], model: ReadingModel, uid_root: str
) -> tuple[Answers, int]:
    """Answer every reading and C-STORE each answer on ``node`` while the next is made; audit it.

    Returns the answers and how many objects were sent. Raises the first failure to send (a PacsError).
    """
    with sending(db, node) as send:
        answers = answer(readings, model, uid_root, send)
    return answers, 2 * len(answers.results)
