"""Talk to a PACS with pynetdicom: associations, C-ECHO, study-level C-FIND, C-STORE.

Every failure is one sentence naming the PACS and what to check; none names a patient. Retrieval (C-GET and
C-MOVE) is in :mod:`core.pacs.retrieve`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from core.errors import PneumoFLError
from core.pacs.nodes import PacsNode

log = logging.getLogger(__name__)
# pynetdicom logs every refusal as an error of its own; our PacsError sentence says it once, in the user's words.
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
XRAY_MODALITIES = ("CR", "DX", "DR")
XRAY_STORAGE = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
TIMEOUT_S = 30.0
SUCCESS, PENDING = 0x0000, (0xFF00, 0xFF01)
_DATES = re.compile(r"^(\d{8})?(-(\d{8})?)?$")  # a day, or a range open at either end
_REJECT_REASONS = {  # (source, reason) of an A-ASSOCIATE-RJ, as a user can act on it
    (1, 2): "it does not support the application context",
    (1, 3): "it does not know our AE title {our}: ask its administrator to add {our} (at this workstation's address)",
    (1, 7): "it is not called {called}: check --ae",
    (3, 1): "it is temporarily congested; try again later",
    (3, 2): "it refuses more associations for now; try again later",
}


class PacsError(PneumoFLError):
    """A PACS could not be reached, refused, or failed an operation (one sentence, never a patient's identity)."""


@dataclass(frozen=True)
class StudyQuery:
    """What to search for; empty fields match anything. ``date`` is ``YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD``."""

    patient_id: str = ""
    patient_name: str = ""
    accession: str = ""
    date: str = ""
    modalities: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patient_id: str, patient_name: str, accession: str, date: str, modalities: str) -> StudyQuery:
        """A query from what a user typed (``modalities`` as ``CR,DX``), checked.

        Raises
        ------
        PacsError
            For a date that is neither a day nor a range, or a query that asks for nothing.
        """
        date = date.strip()
        if not _DATES.match(date):
            raise PacsError(f"Study date {date!r}: give YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")
        query = cls(
            patient_id.strip(),
            patient_name.strip(),
            accession.strip(),
            date,
            tuple(m.strip().upper() for m in modalities.split(",") if m.strip()),
        )
        if not any(dataclasses.astuple(query)):
            raise PacsError(
                "Say what to look for: a patient ID or name, an accession number, a study date or modalities."
            )
        return query


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS has."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    date: str
    description: str
    modalities: tuple[str, ...]
    images: int | None


def _ssl_context(node: PacsNode) -> ssl.SSLContext | None:
    if not node.tls_ca:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=node.tls_ca)
        if node.tls_cert:
            context.load_cert_chain(node.tls_cert, node.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise PacsError(
            f"PACS {node.name}: cannot use its TLS files ({exc}); check --tls-ca, --tls-cert, --tls-key."
        ) from None
    return context


@contextmanager
def association(
    node: PacsNode,
    contexts: Sequence[str | tuple[str, list[str]]],
    *,
    scp_roles: Sequence[str] = (),
    handlers: list | None = None,
) -> Iterator[Association]:
    """An established association with ``node`` proposing ``contexts``; released on leaving.

    ``scp_roles`` are storage classes we take as SCP on this association (C-GET's sub-operations).

    Raises
    ------
    PacsError
        Saying why the association failed: nothing listens, the PACS rejected us (with its reason), or it aborted.
    """
    ae = AE(ae_title=node.our_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.connection_timeout = 10.0
    ae.maximum_pdu_size = 0  # no limit on what the PACS sends us: 16 kB PDUs cost ~100 ms per 2 MB image
    for context in contexts:  # a SOP class (default transfer syntaxes), or (SOP class, [transfer syntaxes])
        if isinstance(context, tuple):
            ae.add_requested_context(context[0], context[1])
        else:
            ae.add_requested_context(context)
    context = _ssl_context(node)
    tls_args = (context, node.host) if context is not None else None
    roles = [build_role(uid, scp_role=True) for uid in scp_roles]
    rejections: list[A_ASSOCIATE_RJ] = []
    watch_rejection = (evt.EVT_PDU_RECV, lambda event: _keep_rejection(event, rejections))
    assoc = ae.associate(
        node.host,
        node.port,
        ae_title=node.ae_title,
        ext_neg=roles or None,
        evt_handlers=[*(handlers or []), watch_rejection],
        tls_args=tls_args,
    )
    if not assoc.is_established:
        raise PacsError(f"PACS {node.name} ({node.address}) {_why_not(assoc, node, rejections)}.")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _keep_rejection(event: evt.Event, rejections: list[A_ASSOCIATE_RJ]) -> None:
    if isinstance(event.pdu, A_ASSOCIATE_RJ):
        rejections.append(event.pdu)


def _why_not(assoc: Association, node: PacsNode, rejections: Sequence[A_ASSOCIATE_RJ]) -> str:
    # The rejection is read from the A-ASSOCIATE-RJ PDU as it is decoded, not from ``assoc.is_rejected``: a PACS
    # that rejects us and closes at once can leave pynetdicom 3.0 reporting an abort (its requestor finds the socket
    # already closed before it looks at the reply: 1 association in 10 against Orthanc).
    if rejections:
        key = (rejections[-1].source, rejections[-1].reason_diagnostic)
        reason = _REJECT_REASONS.get(key, "it gave no reason we know").format(our=node.our_ae, called=node.ae_title)
        return f"refused the association: {reason}"
    if assoc.is_aborted and _listens(node):
        return (
            "accepted the connection, then aborted it: check that it knows our AE title "
            f"{node.our_ae} and, with TLS, that the certificates match"
        )
    return "did not answer: check the host and port, that the PACS is running, and that no firewall is in between"


def _listens(node: PacsNode) -> bool:
    """Whether anything accepts a TCP connection at the node's address (pynetdicom reports both as aborted)."""
    try:
        socket.create_connection((node.host, node.port), timeout=5).close()
    except OSError:
        return False
    return True


def echo(node: PacsNode) -> None:
    """C-ECHO: the PACS answers and accepts us.

    Raises
    ------
    PacsError
        When the association fails or the echo's status is not success.
    """
    with association(node, [Verification]) as assoc:
        status = assoc.send_c_echo()
        if not status or status.Status != SUCCESS:
            raise PacsError(f"PACS {node.name} ({node.address}) answered the echo with status {status_text(status)}.")


def find_studies(node: PacsNode, query: StudyQuery, *, limit: int = 500) -> list[StudyMatch]:
    """C-FIND at study level (study root).

    Raises
    ------
    PacsError
        When the association fails or the PACS reports a failed query.
    """
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = query.patient_id
    identifier.PatientName = query.patient_name
    identifier.AccessionNumber = query.accession
    identifier.StudyDate = query.date
    identifier.ModalitiesInStudy = "\\".join(query.modalities)
    identifier.StudyInstanceUID = ""
    identifier.StudyDescription = ""
    identifier.NumberOfStudyRelatedInstances = ""
    return [_study(match) for match in c_find(node, identifier, "search", limit)]


def c_find(node: PacsNode, identifier: Dataset, what: str, limit: int = 10_000) -> list[Dataset]:
    """The matches of one study-root C-FIND (at most ``limit``), or a PacsError naming ``what`` failed."""
    found: list[Dataset] = []
    with association(node, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code in PENDING and match is not None:
                if len(found) < limit:
                    found.append(match)
            elif code != SUCCESS:
                raise PacsError(
                    f"PACS {node.name} ({node.address}) failed the {what} with status {status_text(status)}."
                )
    return found


def _study(match: Dataset) -> StudyMatch:
    modalities = match.get("ModalitiesInStudy", "")
    count = match.get("NumberOfStudyRelatedInstances", "")
    return StudyMatch(
        study_uid=str(match.get("StudyInstanceUID", "")),
        patient_id=str(match.get("PatientID", "")),
        patient_name=str(match.get("PatientName", "")),
        accession=str(match.get("AccessionNumber", "")),
        date=str(match.get("StudyDate", "")),
        description=str(match.get("StudyDescription", "")),
        modalities=tuple(modalities)
        if not isinstance(modalities, str)
        else tuple(m for m in modalities.split("\\") if m),
        images=int(count) if str(count).strip().isdigit() else None,
    )


def store(node: PacsNode, datasets: Sequence[Dataset]) -> None:
    """C-STORE each dataset on ``node``.

    Raises
    ------
    PacsError
        When the association fails or the PACS does not take one (naming its SOP class and status).
    """
    syntaxes: dict[str, set[str]] = {}
    for dataset in datasets:  # each as it is encoded (the captures are JPEG), no transcoding on the way
        syntaxes.setdefault(str(dataset.SOPClassUID), set()).add(str(dataset.file_meta.TransferSyntaxUID))
    contexts = [(uid, sorted(found)) for uid, found in sorted(syntaxes.items())]
    with association(node, contexts) as assoc:
        for dataset in datasets:
            _store_one(assoc, node, dataset)


def _store_one(assoc: Association, node: PacsNode, dataset: Dataset) -> None:
    try:
        status = assoc.send_c_store(dataset)
    except ValueError:  # pynetdicom: no accepted presentation context for this class and syntax
        raise PacsError(
            f"PACS {node.name} ({node.address}) does not take a {dataset.SOPClassUID.name} encoded as "
            f"{dataset.file_meta.TransferSyntaxUID.name}; ask its administrator to accept it."
        ) from None
    if not status or status.Status not in (SUCCESS, 0xB000, 0xB007, 0xB006):  # warnings still store
        raise PacsError(
            f"PACS {node.name} ({node.address}) did not store a {dataset.SOPClassUID.name}: status {status_text(status)}."
        )


def status_text(status: Dataset | None) -> str:
    """A DIMSE status as sentences give it (``0xA700``), or that none came back."""
    code = getattr(status, "Status", None)
    return "none (the association was lost)" if code is None else f"0x{int(code):04X}"


class StoreStream:
    """C-STORE datasets from a background thread on one association, while the caller makes the next ones.

    ``contexts`` are the (SOP class, [transfer syntaxes]) the datasets will need, known before the first one.
    :meth:`close` waits for the last and raises the first failure (the rest are then not sent).
    """

    def __init__(self, node: PacsNode, contexts: Sequence[tuple[str, list[str]]]) -> None:
        self.node, self.contexts = node, list(contexts)
        self._queue: queue.Queue[Dataset | None] = queue.Queue(maxsize=8)  # a few answers ahead, not the study
        self._error: BaseException | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="pneumofl-c-store", daemon=True)
        self._thread.start()

    def put(self, dataset: Dataset) -> None:
        """Send ``dataset`` (raises the sender's failure, if it already failed)."""
        if self._error is not None:
            raise self._error
        self._queue.put(dataset)

    def close(self) -> int:
        """Wait until everything put was sent; return how many were."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.sent

    def _run(self) -> None:
        try:
            with association(self.node, self.contexts) as assoc:
                while (dataset := self._queue.get()) is not None:
                    _store_one(assoc, self.node, dataset)
                    self.sent += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by put() and close()
            self._error = exc
            while self._queue.get() is not None:  # let the producer finish; nothing more is sent
                pass
