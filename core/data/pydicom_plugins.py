"""A pydicom decoder plugin for 12-bit JPEG Extended (Process 2 and 4), read with GDCM.

GDCM decodes 12-bit JPEG Extended, but pydicom's own GDCM plugin refuses that precision, and the only other
plugin that reads it (pylibjpeg-libjpeg) is GPL-licensed, which an Apache-2.0 installer cannot bundle. This
module hands such frames to GDCM's JPEG codec directly. pydicom imports it by name (``add_plugin``).
"""

from __future__ import annotations

import threading

PLUGIN_LABEL = "pneumofl-gdcm-12bit"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
DECODER_DEPENDENCIES = {JPEG_EXTENDED: ("gdcm>=3.0.10",)}
_lock = threading.Lock()
_registered = False


def is_available(uid: str) -> bool:
    """Whether this plugin can decode ``uid`` (pydicom's plugin protocol)."""
    if uid != JPEG_EXTENDED:
        return False
    try:
        import gdcm  # noqa: F401
    except ImportError:
        return False
    return True


def register_plugins() -> None:
    """Add the plugin to pydicom's JPEG Extended decoder once per process (``add_plugin`` is not thread-safe)."""
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        from pydicom.pixels.decoders import JPEGExtended12BitDecoder

        if PLUGIN_LABEL not in JPEGExtended12BitDecoder.available_plugins:
            JPEGExtended12BitDecoder.add_plugin(PLUGIN_LABEL, (__name__, "decode_frame"))
        _registered = True


def decode_frame(src: bytes, runner: object) -> bytes:
    """Decode one JPEG Extended frame of any precision up to 12 bits (pydicom's decoder-plugin signature).

    Parameters
    ----------
    src
        The encoded frame.
    runner
        pydicom's ``DecodeRunner``: the frame's rows, columns, samples, bits and photometric interpretation.

    Returns
    -------
    bytes
        The decoded frame, in the byte layout pydicom expects for ``runner``'s pixel format.
    """
    import gdcm

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))  # type: ignore[attr-defined]
    image.SetDataElement(element)
    photometric = gdcm.PhotometricInterpretation.GetPIType(runner.photometric_interpretation)  # type: ignore[attr-defined]
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    bits = runner.bits_stored  # type: ignore[attr-defined]
    image.SetPixelFormat(
        gdcm.PixelFormat(runner.samples_per_pixel, runner.bits_allocated, bits, bits - 1, runner.pixel_representation)  # type: ignore[attr-defined]
    )
    buffer = image.GetBuffer()
    if not buffer:
        raise ValueError("GDCM could not decode the JPEG Extended frame")
    # GDCM's SWIG wrapper returns the buffer as str; surrogateescape gets the raw bytes back.
    return buffer.encode("utf-8", "surrogateescape")
