"""Real DICOM files of every transfer syntax, photometric interpretation and failure kind, for the data tests.

Native syntaxes are written by pydicom; RLE, JPEG-LS and JPEG 2000 are encoded by pydicom's encoder plugins;
the JPEG processes pydicom cannot encode (baseline, extended, lossless) are transcoded by GDCM, as a PACS would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

NATIVE = {
    "implicit_le": uid.ImplicitVRLittleEndian,
    "explicit_le": uid.ExplicitVRLittleEndian,
    "explicit_be": uid.ExplicitVRBigEndian,
    "deflated": uid.DeflatedExplicitVRLittleEndian,
}
PYDICOM_ENCODED = {
    "rle": uid.RLELossless,
    "j2k_lossless": uid.JPEG2000Lossless,
    "j2k": uid.JPEG2000,
}
GDCM_ENCODED = {
    "jpeg_baseline": uid.JPEGBaseline8Bit,
    "jpeg_extended": uid.JPEGExtended12Bit,
    "jpeg_lossless": uid.JPEGLossless,
    "jpeg_lossless_sv1": uid.JPEGLosslessSV1,
    "jpeg_ls": uid.JPEGLSLossless,
    "jpeg_ls_near": uid.JPEGLSNearLossless,
}
SYNTAXES = {**NATIVE, **PYDICOM_ENCODED, **GDCM_ENCODED}
LOSSY = {"jpeg_baseline": 8, "jpeg_extended": 64, "jpeg_ls_near": 2, "j2k": 64}
"""Largest error (in stored values, 12-bit unless 8-bit) a lossy syntax may leave."""


def dataset(
    stored: np.ndarray,
    *,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    modality: str | None = "DX",
    frames: int = 1,
    signed: bool = False,
    sop_class: str = uid.DigitalXRayImageStorageForPresentation,
) -> Dataset:
    """A DICOM dataset around ``stored`` ((rows, cols), (rows, cols, 3) or (frames, rows, cols))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    shape = stored.shape[1:] if frames > 1 else stored.shape
    ds.Rows, ds.Columns = shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    ds.PixelData = stored.astype(dtype[(ds.BitsAllocated, signed)]).tobytes()
    return ds


def save(ds: Dataset, path: Path, syntax: str = "explicit_le") -> Path:
    """Write ``ds`` to ``path`` in the named transfer syntax (a key of :data:`SYNTAXES`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if syntax in NATIVE:
        ds.file_meta.TransferSyntaxUID = NATIVE[syntax]
        if syntax == "explicit_be" and ds.BitsAllocated > 8:
            ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
        little = syntax != "explicit_be"
        ds.save_as(path, implicit_vr=syntax == "implicit_le", little_endian=little, enforce_file_format=True)
    elif syntax in PYDICOM_ENCODED:
        options = {"j2k": {"j2k_psnr": [50.0]}}.get(syntax, {})
        ds.compress(PYDICOM_ENCODED[syntax], **options)
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)
        _gdcm_transcode(path, GDCM_ENCODED[syntax])
    return path


def _gdcm_transcode(path: Path, syntax: str) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {path}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot encode {path} as {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(path))
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {path}")


def gradient(rows: int = 48, cols: int = 32, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A smooth ramp plus a little noise: compressible, and every pixel's expected value is known."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    ramp = np.linspace(0, top, cols)[None, :] * np.linspace(0.3, 1.0, rows)[:, None]
    return np.clip(ramp + rng.normal(0, top / 200, (rows, cols)), 0, top).round().astype(np.int64)


def pneumonia_like(rng: np.random.Generator, pneumonia: bool, size: int = 32, bits: int = 12) -> np.ndarray:
    """A tiny X-ray-like image in ``bits`` stored bits; the positive class carries a bright blob."""
    top = (1 << bits) - 1
    image = rng.normal(0.35 * top, 0.05 * top, (size, size))
    if pneumonia:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        yy, xx = np.mgrid[:size, :size]
        image += 0.45 * top * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
    return np.clip(image, 0, top).round().astype(np.int64)


UNUSABLE = ("report_sr.dcm", "cine_3_frames.dcm", "truncated.dcm", "renamed_text.dcm")
"""The files :func:`write_pacs_export` adds that are no chest radiograph, one per failure kind."""


def write_pacs_export(root: Path, size: int = 32, seed: int = 0) -> Path:
    """A folder dataset as a PACS export looks: PNG, JPEG and DICOM of every transfer syntax, MONOCHROME1,
    colour DICOM, a CT slice and a secondary capture, plus one file of each unusable kind in NORMAL.

    Per class: 13 syntaxes + 2 PNG + 2 JPEG + MONOCHROME1 + RGB + YBR_FULL + CT + no modality = 21 usable images.
    """
    from PIL import Image
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(seed)
    for label, name in ((0, "NORMAL"), (1, "PNEUMONIA")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for syntax in SYNTAXES:
            bits = 8 if syntax == "jpeg_baseline" else 12
            save(dataset(pneumonia_like(rng, bool(label), size, bits), bits=bits), folder / f"{syntax}.dcm", syntax)
        for i in range(2):
            Image.fromarray(pneumonia_like(rng, bool(label), size, 8).astype(np.uint8)).save(folder / f"png_{i}.png")
            Image.fromarray(pneumonia_like(rng, bool(label), size, 8).astype(np.uint8)).save(folder / f"jpeg_{i}.jpg")
        inverted = 4095 - pneumonia_like(rng, bool(label), size)
        save(dataset(inverted, photometric="MONOCHROME1"), folder / "monochrome1.dcm", "jpeg_ls")
        grey = pneumonia_like(rng, bool(label), size, 8).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        save(dataset(rgb, bits=8, photometric="RGB"), folder / "rgb.dcm", "rle")
        ybr = dataset(rgb, bits=8, photometric="YBR_FULL")
        ybr.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
        save(ybr, folder / "ybr_full.dcm")
        save(dataset(pneumonia_like(rng, bool(label), size), modality="CT"), folder / "ct_slice.dcm", "j2k_lossless")
        save(dataset(pneumonia_like(rng, bool(label), size), modality=None), folder / "secondary_capture.dcm")
    normal = root / "NORMAL"
    report = dataset(gradient(), sop_class=uid.BasicTextSRStorage, modality="SR")
    del report.PixelData
    save(report, normal / UNUSABLE[0])
    save(dataset(np.stack([gradient(seed=i) for i in range(3)]), frames=3, modality="XA"), normal / UNUSABLE[1])
    save(dataset(gradient()), normal / UNUSABLE[2])
    (normal / UNUSABLE[2]).write_bytes((normal / UNUSABLE[2]).read_bytes()[:-200])
    (normal / UNUSABLE[3]).write_bytes(b"not an image, renamed to .dcm\n" * 4)
    return root
