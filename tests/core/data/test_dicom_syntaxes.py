"""Every DICOM a PACS exports: each transfer syntax decodes to the stored pixels, colour becomes grey, and each
kind of file that is no chest radiograph is one sentence naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.encaps import encapsulate

from core.data.dicom import decode_dicom
from core.data.images import decode_image, load_image, to_uint8
from core.errors import ImageProblem
from tests.core.dicom_factory import LOSSY, SYNTAXES, dataset, gradient, save


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
def test_every_transfer_syntax_decodes_to_the_stored_values(tmp_path: Path, syntax: str) -> None:
    bits = 8 if syntax == "jpeg_baseline" else 12
    stored = gradient(bits=bits)
    path = save(dataset(stored, bits=bits), tmp_path / f"{syntax}.dcm", syntax)
    assert str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == SYNTAXES[syntax]

    image = decode_dicom(str(path), path.read_bytes())
    assert image.values.shape == (48, 32)
    error = np.abs(image.values - stored).max()
    assert error <= LOSSY.get(syntax, 0), f"{syntax}: largest error {error}"
    # And the 8-bit image training sees is the scaled stored image, up to the codec's loss.
    pixels = load_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (48, 32)
    tolerance = 1 + 255 * LOSSY.get(syntax, 0) / stored.max()
    assert np.abs(pixels.astype(int) - to_uint8(stored.astype(float))).max() <= tolerance


def test_signed_sixteen_bit_with_rescale_is_windowed_in_modality_units(tmp_path: Path) -> None:
    # Eight columns each of stored -2000, -1000, -500, 500; modality values (+1000): -1000, 0, 500, 1500.
    stored = np.repeat(np.array([[-2000, -1000, -500, 500]]), 8, axis=1).repeat(8, axis=0)
    ds = dataset(stored, bits=16, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, 1000.0
    ds.WindowCenter, ds.WindowWidth = 500.0, 1000.0  # shows modality values 0 .. 1000
    image = load_image(save(ds, tmp_path / "signed.dcm", "rle"))
    assert image[0, 0] == 0 and image[0, 8] <= 1  # at or below the window's bottom
    assert image[0, 16] == pytest.approx(128, abs=2)
    assert image[0, 24] == 255


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_images_become_luminance(tmp_path: Path, photometric: str) -> None:
    from pydicom.pixels import convert_color_space

    rgb = np.stack([gradient(bits=8, seed=i) for i in range(3)], axis=-1).astype(np.uint8)
    ds = dataset(rgb, bits=8, photometric=photometric)
    if photometric == "YBR_FULL":
        ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    image = decode_image(save(ds, tmp_path / f"{photometric}.dcm"))
    assert image.converted_to_grey
    luminance = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(image.pixels.astype(int) - to_uint8(luminance)).max() <= 2


def test_palette_colour_goes_through_its_lookup_table(tmp_path: Path) -> None:
    indices = np.tile(np.arange(4, dtype=np.uint8), (8, 2))  # 8 x 8, values 0..3
    ds = dataset(indices, bits=8, photometric="PALETTE COLOR")
    # Palette: index i -> grey level i * 20000 in all three 16-bit channels, except blue is 0 for index 3.
    lut = np.array([0, 20000, 40000, 60000], dtype=np.uint16)
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        data = lut.copy() if colour != "Blue" else np.array([0, 20000, 40000, 0], dtype=np.uint16)
        setattr(ds, f"{colour}PaletteColorLookupTableData", data.tobytes())
    image = decode_image(save(ds, tmp_path / "palette.dcm"))
    assert image.converted_to_grey
    row = image.pixels[0, :4].astype(int)
    assert row[0] == 0 and row[1] < row[2]
    # Index 3 is yellow (R=G=60000, B=0): luminance 0.886 * 60000, brighter than index 2's grey 40000.
    assert row[3] == 255 and row[2] == pytest.approx(255 * 40000 / (0.886 * 60000), abs=2)


def _sr_document(path: Path) -> Path:
    ds = dataset(gradient(), sop_class=uid.BasicTextSRStorage, modality="SR")
    del ds.PixelData
    return save(ds, path)


def _multi_frame(path: Path) -> Path:
    frames = np.stack([gradient(seed=i) for i in range(3)])
    return save(dataset(frames, frames=3, modality="CT"), path)


def _truncated_native(path: Path) -> Path:
    save(dataset(gradient()), path)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _truncated_j2k(path: Path) -> Path:
    ds = dataset(gradient())
    ds.compress(uid.JPEG2000Lossless)
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    ds.save_as(path, enforce_file_format=True)
    return path


def _bits_stored_too_large(path: Path) -> Path:
    ds = dataset(gradient())
    ds.BitsStored = 20
    return save(ds, path)


def _no_rows(path: Path) -> Path:
    ds = dataset(gradient())
    ds.Rows = 0
    return save(ds, path)


def _unknown_syntax(path: Path) -> Path:
    save(dataset(gradient()), path, "rle")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML
    ds.save_as(path)
    return path


def _not_dicom(path: Path) -> Path:
    path.write_bytes(b"\x00\x01this is a text file renamed to dcm\n" * 3)
    return path


@pytest.mark.parametrize(
    ("make", "kind", "words"),
    [
        (_sr_document, "no_pixel_data", "holds no image (Basic Text SR Storage"),
        (_multi_frame, "multi_frame", "holds 3 frames (CT)"),
        (_truncated_native, "truncated", "is truncated"),
        (_truncated_j2k, "undecodable", "could not be decoded (JPEG 2000"),
        (_bits_stored_too_large, "invalid_header", "BitsStored is 20"),
        (_no_rows, "invalid_header", "Rows is 0"),
        (_unknown_syntax, "undecodable", "no installed decoder reads (MPEG2"),
        (_not_dicom, "invalid_header", "is not a DICOM file"),
    ],
)
def test_each_unusable_file_is_one_sentence_naming_it(tmp_path: Path, make, kind: str, words: str) -> None:
    path = make(tmp_path / f"{kind}.dcm")
    with pytest.raises(ImageProblem) as raised:
        decode_image(path)
    message = str(raised.value)
    assert raised.value.kind == kind
    assert str(path) in message and words in message
    assert "\n" not in message and message.rstrip().endswith(".")
