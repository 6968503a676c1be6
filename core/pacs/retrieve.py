"""Retrieve a study's X-rays from a PACS: C-GET on our own association, or C-MOVE to our storage SCP.

Either way each image is written as received under ``<SOP instance UID>.dcm`` (a temporary name first, renamed
when complete), only images of the requested study are kept, and a retrieval that fails or is cancelled removes
all it wrote: a folder holds the study's X-rays or nothing.

C-MOVE opens a port for the length of the retrieval. It listens only on the address that faces the PACS, answers
only associations called by our AE title, and keeps only images that come from the PACS's address and belong to
the study asked for: another program or user cannot slip an image into a reading.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from core.pacs.network import (
    PENDING,
    SUCCESS,
    TIMEOUT_S,
    XRAY_MODALITIES,
    XRAY_STORAGE,
    PacsError,
    association,
    c_find,
    status_text,
)
from core.pacs.nodes import DEFAULT_MOVE_PORT, PacsNode

log = logging.getLogger(__name__)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NOT_AUTHORISED = 0x0124  # C-STORE "refused: not authorised" (PS3.7 C.4.2.1.4): not from the PACS, not the study
_OUT_OF_RESOURCES = 0xA700
_MALFORMED = 0xA900


def xray_series(node: PacsNode, study_uid: str) -> list[tuple[str, str, int | None]]:
    """``(series UID, modality, images)`` of each series of the study, X-ray or not."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = ""
    identifier.Modality = ""
    identifier.NumberOfSeriesRelatedInstances = ""
    series = []
    for match in c_find(node, identifier, "series search"):
        count = str(match.get("NumberOfSeriesRelatedInstances", ""))
        series.append(
            (str(match.SeriesInstanceUID), str(match.get("Modality", "")), int(count) if count.isdigit() else None)
        )
    return series


class StudyReceiver:
    """The C-STORE handler of one retrieval: keeps the study's images, refuses anything else."""

    def __init__(
        self,
        folder: Path,
        study_uid: str,
        total: int,
        progress: Callable[[int, int], None] | None,
        peers: frozenset[str] | None = None,
        on_file: Callable[[Path], None] | None = None,
    ) -> None:
        self.folder, self.study_uid, self.total, self.progress = folder, study_uid, total, progress
        self.on_file = on_file
        self.peers = peers  # None: the images arrive on our own association (C-GET)
        self.written: list[Path] = []
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, event: evt.Event) -> int:
        """Keep one C-STORE sub-operation's image, or refuse it; return the status the sender gets."""
        uid = str(event.request.AffectedSOPInstanceUID)
        if not _UID.match(uid):  # it names a file: a hostile PACS must not choose a path
            return _MALFORMED
        if self.peers is not None and event.assoc.requestor.address not in self.peers:
            self.refused += 1
            log.warning("refused an image from %s: not the PACS's address", event.assoc.requestor.address)
            return _NOT_AUTHORISED
        if str(event.dataset.get("StudyInstanceUID", "")) != self.study_uid:
            self.refused += 1
            return _NOT_AUTHORISED
        target = self.folder / f"{uid}.dcm"
        partial = target.with_suffix(".part")
        try:
            partial.write_bytes(event.encoded_dataset())  # as received, with its file meta: no decode, no re-encode
            partial.replace(target)
        except (OSError, ValueError) as exc:
            log.warning("could not keep a retrieved image: %s", exc)
            partial.unlink(missing_ok=True)
            return _OUT_OF_RESOURCES  # the PACS counts it as a failed sub-operation
        with self._lock:  # C-MOVE's sub-operations may come on more than one association
            self.written.append(target)
            done = len(self.written)
        if self.on_file is not None:
            self.on_file(target)
        if self.progress is not None:
            self.progress(done, max(self.total, done))
        return SUCCESS


def retrieve_study(
    node: PacsNode,
    study_uid: str,
    folder: Path,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    move_port: int = DEFAULT_MOVE_PORT,
    on_file: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Retrieve the study's CR/DX/DR series into ``folder`` as ``<SOP instance UID>.dcm``; return the files.

    The node's ``retrieve`` says how: C-GET, or C-MOVE to our storage SCP on ``move_port``. Series of other
    modalities (CT, earlier results) are left on the PACS. ``cancel`` aborts the retrieval. ``on_file`` gets each
    file once it is complete, while the rest are still coming (:func:`core.pacs.pipeline.read_study` reads them).

    Raises
    ------
    PacsError
        When the study has no X-ray series, the association fails, the port for C-MOVE cannot be opened, the PACS
        reports failed sub-operations, or the retrieval was cancelled; the files written so far are removed.
    """
    series = [(uid, n) for uid, modality, n in xray_series(node, study_uid) if modality in XRAY_MODALITIES]
    if not series:
        raise PacsError(f"PACS {node.name} has no CR, DX or DR series in study {study_uid}.")
    total = sum(n or 0 for _, n in series)
    folder.mkdir(parents=True, exist_ok=True)
    cancel = cancel or threading.Event()
    try:
        if node.retrieve == "move":
            receiver = StudyReceiver(folder, study_uid, total, progress, _addresses(node.host), on_file)
            with (
                StorageScp(node, move_port, receiver),
                association(node, [StudyRootQueryRetrieveInformationModelMove]) as assoc,
            ):
                for series_uid, _ in series:
                    responses = assoc.send_c_move(
                        _series(study_uid, series_uid), node.our_ae, StudyRootQueryRetrieveInformationModelMove
                    )
                    _until_done(responses, assoc, node, study_uid, cancel, move_port)
        else:
            receiver = StudyReceiver(folder, study_uid, total, progress, on_file=on_file)
            with association(
                node,
                [StudyRootQueryRetrieveInformationModelGet, *XRAY_STORAGE],
                scp_roles=XRAY_STORAGE,
                handlers=[(evt.EVT_C_STORE, receiver)],
            ) as assoc:
                for series_uid, _ in series:
                    responses = assoc.send_c_get(
                        _series(study_uid, series_uid), StudyRootQueryRetrieveInformationModelGet
                    )
                    _until_done(responses, assoc, node, study_uid, cancel)
        if receiver.refused:
            raise PacsError(
                f"PACS {node.name} ({node.address}) sent {receiver.refused} image(s) of another study, or another "
                f"program sent them, while study {study_uid} was retrieved; none was kept. Try again."
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return receiver.written


def _series(study_uid: str, series_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = series_uid
    return identifier


def _until_done(
    responses: Iterator[tuple[Dataset, Dataset | None]],
    assoc: Association,
    node: PacsNode,
    study_uid: str,
    cancel: threading.Event,
    move_port: int | None = None,
) -> None:
    """Follow a C-GET or C-MOVE (to ``move_port``) to its final status; abort on ``cancel``."""
    for status, _identifier in responses:
        if cancel.is_set():
            assoc.abort()
            raise PacsError(f"Retrieving study {study_uid} from PACS {node.name} was cancelled.")
        code = getattr(status, "Status", None)
        if code in PENDING:
            continue
        failed = int(status.get("NumberOfFailedSuboperations", 0) or 0) if status else 0
        if code != SUCCESS or failed:
            where = (
                f" to {node.our_ae} at port {move_port}: check that it has {node.our_ae} at this workstation's "
                "address and that port, or retrieve with C-GET"
                if move_port is not None
                else ""
            )
            raise PacsError(
                f"PACS {node.name} ({node.address}) could not send study {study_uid}{where} (status "
                f"{status_text(status)}, {failed} image(s) failed)."
            )


def _addresses(host: str) -> frozenset[str]:
    """Every address ``host`` resolves to: the only peers whose images a C-MOVE keeps."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except OSError:
        return frozenset()


def _facing_address(node: PacsNode) -> str:
    """The local address this workstation reaches the PACS from (no packet is sent)."""
    family, _, _, _, address = socket.getaddrinfo(node.host, node.port, proto=socket.IPPROTO_UDP)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        return str(probe.getsockname()[0])


class StorageScp:
    """Our storage SCP for one C-MOVE: listening on the address facing the PACS, shut down on leaving."""

    def __init__(self, node: PacsNode, port: int, receiver: StudyReceiver) -> None:
        self.node, self.port, self.receiver = node, port, receiver
        self.ae = AE(ae_title=node.our_ae)
        self.ae.require_called_aet = True
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = TIMEOUT_S
        self.ae.maximum_pdu_size = 0
        for uid in XRAY_STORAGE:
            self.ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)

    def __enter__(self) -> StorageScp:
        try:
            address = _facing_address(self.node)
            self.server = self.ae.start_server(
                (address, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.receiver)]
            )
        except OSError as exc:
            raise PacsError(
                f"Cannot listen on port {self.port} for PACS {self.node.name}'s C-MOVE ({exc.strerror or exc}): "
                "another program may use it; choose another in Preferences or with "
                "`pneumofl pacs settings --move-port PORT`, and tell the PACS's administrator."
            ) from None
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
