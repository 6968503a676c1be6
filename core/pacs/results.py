"""A reading as DICOM, in the source image's study: a structured report and a Grad-CAM secondary capture.

Both copy the patient and study from the source image (highdicom does this from the reference dataset) and get
new UIDs under the site's root. Both say "not for diagnostic use": a radiologist sees them in the PACS viewer next
to the image, and must never mistake them for a clinical report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset, dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from core import __version__
from core.data.images import decode_image
from core.errors import PneumoFLError
from core.inference.overlay import blend
from core.pacs.nodes import DEFAULT_UID_ROOT

if TYPE_CHECKING:
    from core.inference.models import ReadingModel
    from core.inference.reader import Reading

NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902  # high, so the results sort after the acquisition's series
SC_LONG_SIDE = 1024  # px: enough to read the heatmap on a reading-room monitor, a few MB per capture
MANUFACTURER = "PneumoFL"
MIN_FONT_PX = 10

# Codes: SNOMED CT for the findings, DICOM's own (DCM) for the report's structure, UCUM for the unit.
PNEUMONIA = hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")
NO_PNEUMONIA = hd.sr.CodedConcept("17621005", "SCT", "Normal")
REPORT_TITLE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
FINDING = codes.DCM.Finding
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
SOURCE = hd.sr.CodedConcept("121112", "DCM", "Source of Measurement")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
DIFFERS = hd.sr.CodedConcept("PNEUMOFL-W", "99PNEUMOFL", "Image differs from the training data")
ALGORITHM_PARAMETERS = hd.sr.CodedConcept("111002", "DCM", "Algorithm Parameters")


@dataclass(frozen=True)
class DicomResults:
    """The structured report and secondary capture of one reading."""

    report: Dataset
    capture: Dataset

    @property
    def instance_uids(self) -> tuple[str, str]:
        """``(report, capture)`` SOP instance UIDs, as recorded with the prediction."""
        return str(self.report.SOPInstanceUID), str(self.capture.SOPInstanceUID)


def caption(reading: Reading, model: ReadingModel) -> list[str]:
    """The lines burned into the secondary capture and repeated in the report."""
    assert reading.probability is not None
    return [
        f"PneumoFL {__version__}: {reading.decision} (probability of pneumonia {reading.probability:.3f})",
        f"Operating point {reading.operating_point}, threshold {reading.threshold:.3f}",
        f"Model {model.name}, weights SHA-256 {model.weights_sha256[:16]}",
        *(f"WARNING: {warning}" for warning in reading.warnings),
        NOT_FOR_DIAGNOSIS,
    ]


def dicom_results(reading: Reading, model: ReadingModel, uid_root: str = DEFAULT_UID_ROOT) -> DicomResults:
    """The SR and the secondary capture of a reading of a DICOM image.

    Parameters
    ----------
    reading
        A reading of a DICOM file, with a probability (and a heatmap for the capture's overlay).
    model
        The model that read it: its name and weights' SHA-256 identify it in both objects.
    uid_root
        The site's UID root; series and instance UIDs are made under it.

    Raises
    ------
    PneumoFLError
        When the reading has no probability, or its file is not a DICOM image with patient and study.
    """
    if reading.probability is None:
        raise PneumoFLError(f"{reading.path.name} has no reading to send: {reading.error}")
    try:
        source = dcmread(reading.path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds; one sentence names the file
        raise PneumoFLError(
            f"{reading.path} is not a DICOM file ({exc}); results as DICOM need DICOM images."
        ) from None
    missing = [k for k in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID") if k not in source]
    if missing:
        raise PneumoFLError(f"{reading.path} has no {', '.join(missing)}: it cannot be answered in its study.")
    lines = caption(reading, model)
    return DicomResults(_report(source, reading, model, lines, uid_root), _capture(source, reading, lines, uid_root))


def _uid(root: str) -> str:
    return generate_uid(prefix=root if root.endswith(".") else root + ".")


def _report(source: Dataset, reading: Reading, model: ReadingModel, lines: list[str], root: str) -> Dataset:
    assert reading.probability is not None
    finding = PNEUMONIA if reading.decision == "PNEUMONIA" else NO_PNEUMONIA
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = [
        hd.sr.CodeContentItem(FINDING, finding, relationship_type=contains),
        hd.sr.NumContentItem(
            hd.sr.CodedConcept("PNEUMOFL-P", "99PNEUMOFL", "Probability of pneumonia"),
            float(round(reading.probability, 6)),
            hd.sr.CodedConcept("1", "UCUM", "no units"),
            relationship_type=contains,
        ),
        hd.sr.TextContentItem(ALGORITHM_NAME, f"PneumoFL {model.name}", relationship_type=contains),
        hd.sr.TextContentItem(ALGORITHM_VERSION, __version__, relationship_type=contains),
        hd.sr.TextContentItem(
            ALGORITHM_PARAMETERS,
            f"operating point {reading.operating_point}; threshold {reading.threshold:.6f}; "
            f"run {model.run_id if model.run_id is not None else 'exported'}; weights SHA-256 {model.weights_sha256}",
            relationship_type=contains,
        ),
        hd.sr.ImageContentItem(SOURCE, source.SOPClassUID, source.SOPInstanceUID, relationship_type=contains),
        hd.sr.TextContentItem(COMMENT, " ".join(lines), relationship_type=contains),
        *(hd.sr.TextContentItem(DIFFERS, warning, relationship_type=contains) for warning in reading.warnings),
    ]
    root_item = hd.sr.ContainerContentItem(REPORT_TITLE, template_id=None)
    root_item.ContentSequence = hd.sr.ContentSequence(items)
    report = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root_item,
        series_instance_uid=_uid(root),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"PneumoFL reading ({NOT_FOR_DIAGNOSIS.lower()})",
    )
    scheme = Dataset()  # our own code (the probability) is declared, as the standard asks of a private scheme
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = "99PNEUMOFL", "PneumoFL codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    report.CodingSchemeIdentificationSequence = [scheme]
    return report


def _capture(source: Dataset, reading: Reading, lines: list[str], root: str) -> Dataset:
    grey = decode_image(reading.path).pixels
    scale = min(1.0, SC_LONG_SIDE / max(grey.shape))
    if scale < 1.0:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR))
    heat = reading.heatmap if reading.heatmap is not None else np.zeros((2, 2), np.float32)
    pixels = _with_caption(blend(grey, heat), lines)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.YBR_FULL_422,  # JPEG's colour space
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=_uid(root),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid(root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),  # unknown orientation is not allowed; the usual PA chest
        # JPEG baseline: a 1024 px RGB capture is 3 MB raw and about 0.2 MB so; it is a picture to look at, not data.
        transfer_syntax_uid=JPEGBaseline8Bit,
        series_description=f"PneumoFL heatmap ({NOT_FOR_DIAGNOSIS.lower()})",
    )
    # Encapsulated (JPEG) pixel data is OB of undefined length; pydicom fixes that when it writes a file, but a
    # C-STORE encodes the dataset as it is in memory.
    capture["PixelData"].VR, capture["PixelData"].is_undefined_length = "OB", True
    capture.BurnedInAnnotation = "YES"  # the caption is part of the pixels
    capture.Laterality = source.get("Laterality", "")  # type 2C: empty for an unpaired part (the chest)
    capture.ImageComments = " ".join(lines)
    return capture


def _with_caption(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """The image with a black band below it carrying ``lines`` in white: the caption never hides anatomy.

    The font shrinks to fit the image's width, down to a readable minimum; past that, lines wrap.
    """
    width = rgb.shape[1]
    longest = max(lines, key=len)
    size = max(MIN_FONT_PX, width // 40)
    font = ImageFont.load_default(size=size)
    while size > MIN_FONT_PX and font.getlength(longest) > width - 16:
        size -= 1
        font = ImageFont.load_default(size=size)
    wrapped: list[str] = []
    for line in lines:
        words, current = line.split(" "), ""
        for word in words:
            candidate = f"{current} {word}".strip()
            if current and font.getlength(candidate) > width - 16:
                wrapped.append(current)
                candidate = word
            current = candidate
        wrapped.append(current)
    step = size + size // 3
    band = Image.new("RGB", (width, step * len(wrapped) + 8), "black")
    draw = ImageDraw.Draw(band)
    for n, line in enumerate(wrapped):
        draw.text((8, 4 + n * step), line, fill="white", font=font)
    return np.concatenate([rgb, np.asarray(band)], axis=0)


def write_results(results: DicomResults, folder: Path) -> list[Path]:
    """Write both objects into ``folder`` as ``<SOP instance UID>.dcm``; return the files.

    Raises
    ------
    PneumoFLError
        Naming the folder, when it cannot be written.
    """
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for dataset in (results.report, results.capture):
            target = folder / f"{dataset.SOPInstanceUID}.dcm"
            dataset.save_as(target, enforce_file_format=True)
            written.append(target)
    except OSError as exc:
        raise PneumoFLError(f"Cannot write DICOM results into {folder} ({exc.strerror or exc}).") from None
    return written
