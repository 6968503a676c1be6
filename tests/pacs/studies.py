"""Chest X-ray studies as a PACS holds them: CR and DX images with patient, study and series, written by pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from tests.imaging import xray

CLASSES = {"CR": uid.ComputedRadiographyImageStorage, "DX": uid.DigitalXRayImageStorageForPresentation}


def chest_image(
    path: Path,
    *,
    study_uid: str,
    patient_id: str,
    modality: str = "CR",
    view: str = "PA",
    age: str = "045Y",
    pneumonia: bool = True,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """One 12-bit chest image of ``study_uid`` in a series of its own, saved at ``path``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CLASSES[modality], meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = (
        "Doe^Jane",
        patient_id,
        "",
        "F",
        age,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, uid.generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261203", "101010", "ACC-1", "1"
    ds.ReferringPhysicianName, ds.StudyDescription = "", "Chest X-ray"
    ds.SeriesNumber, ds.InstanceNumber = 1 + seed, 1
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.Manufacturer = modality, "CHEST", view, "Test"
    ds.PatientOrientation = ["L", "F"] if view != "LL" else ["P", "F"]
    ds.ImageLaterality = "U"  # DX: unpaired body part
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = xray(np.random.default_rng(seed), pneumonia, size).astype(np.uint16) * 16
    ds.PixelData = pixels.tobytes()
    if modality == "DX":
        ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
