"""Reading and writing image files: the one place where pixels meet the disk.

Conventions (every other module relies on them):

* ``Image.pixels`` is ``float32`` with shape ``(C, H, W)``: ``C == 1`` for grey, ``C == 3`` for
  RGB. Values lie in ``[0, 1]``: an 8-bit sample ``v`` reads as ``v / 255``, a 16-bit one as
  ``v / 65535``. Batching to ``(1, C, H, W)`` and moving to torch is the caller's job; this module
  is a torch-free leaf (numpy and Pillow only).
* Transparency never mixes with colour: ``Image.alpha`` is a separate ``float32`` ``(1, H, W)``
  array in ``[0, 1]`` (1 = opaque), or ``None``. Colour values are *not* premultiplied.
* Pixels are upright: an EXIF orientation is applied on read and ``Image.exif`` keeps the EXIF
  block with its orientation reset to 1, so writing it back cannot rotate the image twice.
* ``bit_depth`` (8 or 16) and ``icc_profile`` describe the source so that ``write_image`` can
  keep them: 16-bit in gives 16-bit out where the format holds it (PNG, TIFF). On write, values
  are clipped to ``[0, 1]`` (NaN counts as 0) and quantised as ``round(x * maxval)``, so a read
  followed by a write is exact for lossless formats.

Source modes and what they become:

======================  ======================================================================
``1``                   grey, values 0 or 1, ``bit_depth`` 8
``L``                   grey, 8 bits
``I;16`` (and B/L/N)    grey, 16 bits
``I``                   grey, 16 bits (clipped to 0..65535: Pillow opens some 16-bit files so)
``LA`` / ``La``         grey + alpha
``RGB`` / ``RGBX``      RGB; ``YCbCr`` is converted to RGB
``RGBA`` / ``RGBa``     RGB + alpha (premultiplied sources are un-premultiplied)
``P`` / ``PA``          palette, expanded to RGB, plus alpha when it has transparency. A palette
                        image whose pixels are all grey (R == G == B everywhere, e.g. the Set11
                        "Parrots.tif") becomes grey, ``C == 1``: that is what it represents, and
                        grey benchmarks must score it as grey. Only palettes collapse: an RGB
                        file that happens to be grey stays RGB.
``CMYK``                RGB, through its ICC profile when it has one (the profile on the result
                        is then sRGB), otherwise Pillow's plain conversion
16-bit RGB/RGBA/LA      kept at 16 bits from PNG and TIFF (see below), reported with the mode of
                        the channels they hold (``RGB``, ``RGBA``, ``LA``)
``F``, ``LAB``, ...     refused with ``ImageReadError`` ("unsupported pixel mode")
======================  ======================================================================

A PNG/TIFF colour key (tRNS) becomes an alpha mask. Multi-frame files give their first frame.
Any format Pillow decodes can be read (``.pgm``, ``.gif``, ...); ``SUPPORTED_SUFFIXES`` are the
ones that can also be written. 16-bit CMYK and premultiplied 16-bit RGBA TIFFs are read at 8
bits (``bit_depth`` 8): Pillow converts those while unpacking, so no exact path exists. EXIF is
kept from JPEG, PNG and WebP sources; a TIFF source's orientation is applied, but ``exif`` is
``None`` because Pillow reports a TIFF's own structural tags as its EXIF.

16-bit colour: Pillow has no 16-bit RGB image mode and would quietly keep only the high byte.
Its decoders still unfilter and decompress the file correctly, though; what drops the low byte is
the final unpacking step. So a 16-bit colour PNG/TIFF is decoded twice, once unpacking the high
byte of each sample and once the low byte, and the two are joined, which is exact and lets
Pillow keep handling compression, interlacing and byte order (imageio's Pillow plugin returns
such files as 8-bit, so it cannot serve here). Writing 16-bit colour TIFF goes through imageio's
tifffile plugin; 16-bit colour PNG through the small encoder below, because neither Pillow nor
imageio's Pillow plugin can write one ("Cannot handle this data type: (1, 1, 3), <u2"), and
imageio's FreeImage plugin needs a binary download. 16-bit grey uses Pillow's ``I;16`` mode both
ways.

What each output format keeps (see ``write_image``):

======  ===========  =====  ===  ====  ===========================================
format  bit depths   alpha  ICC  EXIF  notes
======  ===========  =====  ===  ====  ===========================================
PNG     8, 16        yes    yes  yes
TIFF    8, 16        yes    yes  yes*  deflate; 16-bit grey+alpha is stored as RGBA;
                                       * not for 16-bit colour (tifffile, no EXIF)
JPEG    8            no     yes  yes   4:4:4 chroma at quality >= 90
WebP    8            yes    yes  yes   no grey mode: grey is stored as RGB;
                                       quality 100 means lossless
BMP     8            no     no   no
======  ===========  =====  ===  ====  ===========================================

Alpha sent to JPEG or BMP is dropped with a ``UserWarning``. An ICC profile whose colour space
does not match the channels written (an RGB profile on a grey image) is left out, since viewers
may reject the file. Palette sources are written as full colour or grey, never re-quantised.

Errors: every read failure is an ``ImageReadError`` whose message is one line naming the file.
Write failures caused by the disk raise ``IrcError``; a bad suffix or argument raises
``UsageError``. Writes are atomic: a hidden temporary file in the target folder is fsynced and
then renamed over the target, so a reader never sees half an image.

Decompression bombs: ``read_image`` refuses images with more than ``max_pixels`` pixels, checked
from the header before any pixel is decoded. The default limit, ``MAX_PIXELS_DEFAULT``
(200 million pixels, about 2.4 GB of float32 RGB), can be changed with the environment variable
``IRC_MAX_PIXELS`` (a whole number; 0 means no limit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import os
import stat
import struct
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile, UnidentifiedImageError, features

from irc.atomic import atomic_path
from irc.errors import ImageReadError, IrcError, UsageError

__all__ = [
    "MAX_PIXELS_DEFAULT",
    "MAX_PIXELS_ENV",
    "SUPPORTED_SUFFIXES",
    "Image",
    "is_image_path",
    "read_image",
    "write_image",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
"""Suffixes (lower case) that ``is_image_path`` accepts and ``write_image`` can write."""

MAX_PIXELS_DEFAULT: int = 200_000_000
"""Default pixel-count limit of ``read_image``: 200 MP, e.g. 20000 x 10000. A 200 MP RGB image
is about 2.4 GB as float32, which a workstation can still hold; beyond that a file is more
likely an attack or a mistake than a photo. Overridden by ``IRC_MAX_PIXELS``."""

MAX_PIXELS_ENV = "IRC_MAX_PIXELS"

_FORMAT_BY_SUFFIX = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})
_DEEP_FORMATS = frozenset({"PNG", "TIFF"})
_ICC_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP"})
_EXIF_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP"})

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112

# Pillow's decompression-bomb limit and its truncated-file switch are process-wide settings.
# read_image applies its own limit, so it switches Pillow's off (and forces truncation checks on)
# while it decodes; the lock keeps two threads from restoring each other's saved values.
_PIL_SETTINGS_LOCK = threading.Lock()


@dataclass
class Image:
    """A decoded image plus what is needed to write it back faithfully.

    Attributes:
        pixels: ``float32`` array of shape ``(C, H, W)``, ``C`` = 1 (grey) or 3 (RGB), values in
            ``[0, 1]``; not premultiplied by alpha.
        alpha: ``float32`` array of shape ``(1, H, W)`` in ``[0, 1]`` (1 = opaque), or ``None``.
        bit_depth: Bits per channel of the source, 8 or 16; ``write_image`` keeps it where the
            format allows.
        icc_profile: The source's ICC profile bytes, or ``None``.
        source_mode: Pillow mode of the source ("L", "RGB", "P", "I;16", ...); 16-bit colour
            sources report "LA", "RGB" or "RGBA" with ``bit_depth`` 16.
        format: Pillow format name of the source ("PNG", "JPEG", ...), or ``None``.
        exif: Raw EXIF block (starting with ``b"Exif\\0\\0"``) with its orientation already
            applied to the pixels and reset to 1, or ``None``.
        description: Text written into the output's metadata (irc records how an image was
            restored: a PNG ``tEXt`` chunk with keyword ``irc``, a JPEG comment, a TIFF
            ImageDescription); not read from sources.
        jpeg_quality: For a JPEG source, the libjpeg quality (1-100) whose luminance table is
            closest to the file's (:func:`jpeg_quality`); ``None`` for other sources. An
            estimate for files other encoders wrote (cameras, editors use tables of their own).

    Arrays given as another float dtype are converted to ``float32``; a wrong shape raises
    ``ValueError``.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    icc_profile: bytes | None
    source_mode: str
    format: str | None
    exif: bytes | None = None
    description: str | None = None
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels, dtype=np.float32)
        if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
            raise ValueError(
                f"pixels must have shape (C, H, W) with C = 1 or 3, got {pixels.shape}"
            )
        self.pixels = pixels
        if self.alpha is not None:
            alpha = np.asarray(self.alpha, dtype=np.float32)
            if alpha.shape != (1, *pixels.shape[1:]):
                raise ValueError(
                    f"alpha must have shape {(1, *pixels.shape[1:])} to match the pixels, "
                    f"got {alpha.shape}"
                )
            self.alpha = alpha
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")

    @property
    def height(self) -> int:
        """Rows, ``H``."""
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        """Columns, ``W``."""
        return int(self.pixels.shape[2])

    @property
    def channels(self) -> int:
        """Colour channels, ``C`` (1 or 3; alpha not counted)."""
        return int(self.pixels.shape[0])

    def with_pixels(self, pixels: np.ndarray) -> Image:
        """Returns a copy carrying new pixels and this image's metadata.

        Args:
            pixels: ``(C', H', W')`` array in ``[0, 1]``, ``C'`` = 1 or 3; the channel count
                may differ from this image's.

        Returns:
            A new ``Image``. When ``(H', W')`` differs from ``(H, W)`` (super-resolution,
            any resize), the alpha is resized to match with bicubic filtering and clipped to
            ``[0, 1]``. A caller that crops must crop the alpha itself.
        """
        pixels = np.asarray(pixels, dtype=np.float32)
        alpha = self.alpha
        if alpha is not None and pixels.ndim == 3 and pixels.shape[1:] != alpha.shape[1:]:
            alpha = _resize_plane(alpha[0], height=pixels.shape[1], width=pixels.shape[2])[None]
        return dataclasses.replace(self, pixels=pixels, alpha=alpha)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Tells whether a path names an image this module handles, by suffix only (case-blind)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS_DEFAULT
) -> Image:
    """Decodes an image file into upright float pixels.

    Args:
        path: The file. Any format Pillow reads is accepted; ``SUPPORTED_SUFFIXES`` are the
            ones tested and writable.
        max_pixels: Refuse images with more pixels than this (checked from the header, before
            decoding). ``None`` means no limit. When left at ``MAX_PIXELS_DEFAULT``, the
            environment variable ``IRC_MAX_PIXELS`` overrides it (0 there means no limit).

    Returns:
        An ``Image``: pixels ``(C, H, W)`` float32 in ``[0, 1]``, alpha ``(1, H, W)`` or
        ``None``, with bit depth, ICC profile, source mode, format and EXIF of the source.

    Raises:
        ImageReadError: The file is missing, a directory, empty, not an image, truncated,
            corrupt, in an unsupported pixel mode, or over the pixel limit. The message is one
            line starting with the path.
        UsageError: ``max_pixels`` or ``IRC_MAX_PIXELS`` is not a valid number.
    """
    path = Path(path)
    limit, from_default = _pixel_limit(max_pixels)
    _check_is_file(path)
    try:
        with _pillow_settings_for_reading():
            decoded = _decode(path, limit, from_default)
    except IrcError:
        raise
    except MemoryError as err:
        raise ImageReadError(path, "not enough memory to decode the image") from err
    except Exception as err:  # noqa: BLE001 - decoders raise anything; the user gets one line
        raise ImageReadError(path, _describe_decode_error(err)) from err
    return _to_image(decoded)


@dataclass
class _Decoded:
    """Integer samples straight from the decoder, before orientation and scaling."""

    colour: np.ndarray  # (H, W, C) uint8 or uint16, C = 1 or 3
    alpha: np.ndarray | None  # (H, W), same dtype as colour
    bit_depth: int
    source_mode: str
    format: str | None
    icc_profile: bytes | None
    exif: bytes | None
    orientation: int
    jpeg_quality: int | None = None


# The luminance quantisation table of the JPEG standard (ITU T.81, Annex K.1), which libjpeg
# scales by the quality setting; only its entries' sum is used below, so the order is irrelevant.
_STANDARD_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def _libjpeg_table_sum(quality: int) -> int:
    """Sum of the luminance table libjpeg writes at ``quality`` (``jpeg_quality_scaling``, entries
    clamped to the baseline range 1-255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return sum(min(max((q * scale + 50) // 100, 1), 255) for q in _STANDARD_LUMA_TABLE)


@functools.cache
def _libjpeg_table_sums() -> tuple[int, ...]:
    """``_libjpeg_table_sum`` of qualities 1-100, computed once (read for every JPEG decoded)."""
    return tuple(_libjpeg_table_sum(q) for q in range(1, 101))


def jpeg_quality(luma_table) -> int:
    """The libjpeg quality (1-100) whose luminance table has the sum closest to ``luma_table``'s
    (64 entries, any order): exact for files libjpeg / Pillow wrote, an equivalent for others."""
    total = sum(int(v) for v in luma_table)
    sums = _libjpeg_table_sums()
    return min(range(1, 101), key=lambda q: (abs(sums[q - 1] - total), q))


def _pixel_limit(max_pixels: int | None) -> tuple[int | None, bool]:
    """Resolves the effective limit; the flag says whether the env var could have raised it."""
    if max_pixels is None:
        return None, False
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise UsageError(f"max_pixels must be a positive whole number or None, got {max_pixels!r}")
    if max_pixels != MAX_PIXELS_DEFAULT:
        return max_pixels, False
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return max_pixels, True
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(
            f"{MAX_PIXELS_ENV} must be a whole number of pixels (0 for no limit), got {raw!r}"
        )
    return (value or None), True


def _check_is_file(path: Path) -> None:
    """Turns the common non-image situations into clear reasons before Pillow sees them."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot access the file ({_os_reason(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "not a regular file")
    if info.st_size == 0:
        raise ImageReadError(path, "empty file")


@contextlib.contextmanager
def _pillow_settings_for_reading():
    # Pillow's own bomb check would refuse images between its limit (~179 MP) and ours, and it
    # also runs inside load() for TIFF, so it is off for the whole decode. Truncated data must
    # fail even if some other code switched LOAD_TRUNCATED_IMAGES on for itself.
    with _PIL_SETTINGS_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        PILImage.MAX_IMAGE_PIXELS = None
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _check_png_complete(path: Path) -> None:
    """A PNG whose compressed data ends early but cleanly decodes, in Pillow, to an image whose
    missing rows are black, with no error: count the decompressed bytes against the header's."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or not width or not height:
        return
    def row_bytes(w: int) -> int:
        return 1 + (w * channels * depth + 7) // 8
    if interlace:
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        expected = 0
        for x0, y0, dx, dy in passes:
            pw, ph = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
            if pw > 0 and ph > 0:
                expected += ph * row_bytes(pw)
    else:
        expected = height * row_bytes(width)
    inflater = zlib.decompressobj()
    got = 0
    for chunk in idat:
        got += len(inflater.decompress(chunk, max(1, expected + 1 - got)))
        if got >= expected:
            return
    got += len(inflater.flush())
    if got < expected:
        rows = got * height // max(1, expected)
        raise ImageReadError(path, f"truncated PNG: the data holds about {rows} of {height} rows")


def _check_size(path: Path, width: int, height: int, limit: int | None, from_default: bool) -> None:
    count = width * height
    if limit is not None and count > limit:
        hint = f" (set {MAX_PIXELS_ENV} to raise it)" if from_default else ""
        raise ImageReadError(
            path,
            f"image too large: {width} x {height} = {count} pixels exceeds the limit of {limit}"
            f"{hint}",
        )


@contextlib.contextmanager
def _libtiff_quiet(fmt: str | None) -> Iterator[None]:
    """Keep libtiff's C-level messages ("ZIPDecode: Decoding error ...") off stderr while a
    TIFF decodes: a bad file is reported once, as irc's one-line failure. Other formats and
    non-main threads are left alone (the file descriptor is process-wide)."""
    if fmt != "TIFF" or threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode(path: Path, limit: int | None, from_default: bool) -> _Decoded:
    with PILImage.open(path) as im, _libtiff_quiet(im.format):
        # The header has been parsed but no pixel decoded yet: the cheap moment to refuse.
        _check_size(path, im.width, im.height, limit, from_default)
        fmt = "JPEG" if im.format == "MPO" else im.format
        if fmt == "PNG":
            _check_png_complete(path)
        icc = im.info.get("icc_profile") or None
        plan = _deep_colour_plan(im)
        if plan is not None:
            colour, alpha, source_mode = _decode_deep_colour(path, im, plan)
            bit_depth = 16
        else:
            im.load()
            colour, alpha, bit_depth, icc = _samples_from_mode(im, icc)
            source_mode = im.mode
        if alpha is None:
            alpha = _colour_key_alpha(colour, im.info.get("transparency"), im.mode)
        exif, orientation = _exif_and_orientation(im, fmt)
        tables = getattr(im, "quantization", None) if fmt == "JPEG" else None
        quality = jpeg_quality(tables[0]) if tables and len(tables.get(0, ())) == 64 else None
    return _Decoded(colour, alpha, bit_depth, source_mode, fmt, icc, exif, orientation, quality)


def _samples_from_mode(
    im: PILImage.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, int, bytes | None]:
    """Integer ``(H, W, C)`` colour, ``(H, W)`` alpha, bit depth and ICC for a loaded image."""
    mode = im.mode
    if mode == "1":
        return _hwc(np.asarray(im.convert("L"))), None, 8, icc
    if mode == "L":
        return _hwc(np.asarray(im)), None, 8, icc
    if mode.startswith("I;16"):
        return _hwc(np.asarray(im).astype(np.uint16)), None, 16, icc
    if mode == "I":
        grey = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        return _hwc(grey), None, 16, icc
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA") if mode == "La" else im)
        return la[..., :1], la[..., 1], 8, icc
    if mode in ("RGB", "RGBX", "YCbCr"):
        return np.asarray(im if mode == "RGB" else im.convert("RGB")), None, 8, icc
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA") if mode == "RGBa" else im)
        return rgba[..., :3], rgba[..., 3], 8, icc
    if mode in ("P", "PA"):
        palette_mode = getattr(im.palette, "mode", None)
        has_alpha = mode == "PA" or "transparency" in im.info or palette_mode == "RGBA"
        expanded = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
        colour = expanded[..., :3]
        alpha = expanded[..., 3] if has_alpha else None
        if _all_grey(colour):
            colour = colour[..., :1]
        return np.ascontiguousarray(colour), alpha, 8, icc
    if mode == "CMYK":
        rgb, icc = _cmyk_to_rgb(im, icc)
        return np.asarray(rgb), None, 8, icc
    raise _UnsupportedMode(mode)


class _UnsupportedMode(Exception):
    def __init__(self, mode: str):
        super().__init__(f"unsupported pixel mode {mode!r}")


def _hwc(array: np.ndarray) -> np.ndarray:
    return array[..., None] if array.ndim == 2 else array


def _all_grey(rgb: np.ndarray) -> bool:
    red = rgb[..., 0]
    return bool(np.array_equal(red, rgb[..., 1]) and np.array_equal(red, rgb[..., 2]))


def _cmyk_to_rgb(im: PILImage.Image, icc: bytes | None) -> tuple[PILImage.Image, bytes | None]:
    """Converts CMYK to RGB, colour-managed when the file carries a CMYK profile."""
    if icc is not None:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            if rgb is not None:
                return rgb, srgb.tobytes()
        except Exception:  # noqa: BLE001 - a broken profile is no reason to refuse the image
            pass
    # The CMYK profile cannot describe RGB samples, so it must not travel with them.
    return im.convert("RGB"), None


def _colour_key_alpha(colour: np.ndarray, key: object, mode: str) -> np.ndarray | None:
    """An alpha mask from a PNG/TIFF tRNS colour key (one grey value or one RGB triple)."""
    if key is None or mode in ("P", "PA", "1"):
        return None
    maxval = np.iinfo(colour.dtype).max
    if isinstance(key, int) and colour.shape[-1] == 1:
        match = colour[..., 0] == key
    elif isinstance(key, tuple) and len(key) == 3 and colour.shape[-1] == 3:
        match = np.all(colour == np.asarray(key, dtype=colour.dtype), axis=-1)
    else:
        return None
    return np.where(match, 0, maxval).astype(colour.dtype)


def _exif_and_orientation(im: PILImage.Image, fmt: str | None) -> tuple[bytes | None, int]:
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - broken metadata is no reason to refuse good pixels
        return None, 1
    orientation = exif.get(_ORIENTATION_TAG, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    raw = im.info.get("exif")
    if fmt == "TIFF" or not raw:
        # A TIFF's "EXIF" as Pillow reports it is the file's own IFD (strip offsets, sizes,
        # compression); copied into another file it would describe the wrong image.
        return None, orientation
    if _ORIENTATION_TAG in exif and exif[_ORIENTATION_TAG] != 1:
        exif[_ORIENTATION_TAG] = 1
        raw = exif.tobytes()
    return _with_exif_header(bytes(raw)), orientation


def _with_exif_header(raw: bytes) -> bytes:
    return raw if raw.startswith(_EXIF_HEADER) else _EXIF_HEADER + raw


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation to an ``(H, W, ...)`` array, as ``ImageOps.exif_transpose``."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return np.rot90(array, 2).swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def _to_image(decoded: _Decoded) -> Image:
    scale = 65535.0 if decoded.colour.dtype == np.uint16 else 255.0
    colour = _orient(decoded.colour, decoded.orientation)
    pixels = colour.transpose(2, 0, 1).astype(np.float32, order="C")
    pixels /= scale
    alpha = None
    if decoded.alpha is not None:
        alpha_scale = 65535.0 if decoded.alpha.dtype == np.uint16 else 255.0
        alpha = _orient(decoded.alpha, decoded.orientation)[None].astype(np.float32, order="C")
        alpha /= alpha_scale
    return Image(
        pixels=pixels,
        alpha=alpha,
        bit_depth=decoded.bit_depth,
        icc_profile=decoded.icc_profile,
        source_mode=decoded.source_mode,
        format=decoded.format,
        exif=decoded.exif,
        jpeg_quality=decoded.jpeg_quality,
    )


# 16-bit colour through Pillow: the decoder's rawmode picks the unpacker. "X;16B" keeps the first
# byte of each big-endian sample pair, "X;16L" the second; decoding once with each gives the high
# and the low byte. Unfiltering (PNG) and decompression (both) depend only on the bits per pixel,
# which both rawmodes share, so each pass sees exactly the same byte stream.
_ORDER_SWAP = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


@dataclass(frozen=True)
class _DeepPlan:
    high: str  # rawmode whose unpacker yields the high byte of each sample
    low: str | None  # rawmode yielding the low byte; None: `high` already yields both bytes
    source_mode: str


def _deep_colour_plan(im: PILImage.Image) -> _DeepPlan | None:
    """How to decode a 16-bit colour PNG/TIFF exactly, or None for everything else."""
    if im.format not in _DEEP_FORMATS or not im.tile:
        return None
    rawmodes = {_tile_rawmode(tile.args) for tile in im.tile}
    if len(rawmodes) != 1:
        return None
    rawmode = rawmodes.pop()
    if rawmode is None:
        return None
    if im.format == "PNG" and rawmode == "LA;16B" and im.mode == "RGBA":
        # 16-bit grey+alpha is 4 bytes a pixel, like 8-bit RGBA: plain "RGBA" unpacking hands
        # over the bytes (L hi, L lo, A hi, A lo) untouched in one pass.
        return _DeepPlan(high="RGBA", low=None, source_mode="LA")
    base, _, order = rawmode.partition(";")
    # Premultiplied 16-bit alpha ("RGBa;16") is un-premultiplied at 8 bits by Pillow's unpacker,
    # which a byte-split cannot reproduce; such files fall back to 8 bits.
    if base in ("RGB", "RGBA", "RGBX") and order in _ORDER_SWAP:
        return _DeepPlan(
            high=rawmode,
            low=f"{base};{_ORDER_SWAP[order]}",
            source_mode="RGBA" if base == "RGBA" else "RGB",
        )
    return None


def _tile_rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(im: PILImage.Image, rawmode: str) -> None:
    tiles = []
    for tile in im.tile:
        args = tile.args
        args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
        tiles.append(tile._replace(args=args))
    im.tile = tiles


def _decode_deep_colour(
    path: Path, im: PILImage.Image, plan: _DeepPlan
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Decodes a 16-bit colour PNG/TIFF to ``(H, W, C)`` uint16 colour and ``(H, W)`` alpha."""
    _with_rawmode(im, plan.high)
    im.load()
    high = np.asarray(im).astype(np.uint16)
    if plan.low is None:
        grey = (high[..., 0] << 8) | high[..., 1]
        alpha = (high[..., 2] << 8) | high[..., 3]
        return grey[..., None], alpha, plan.source_mode
    with PILImage.open(path) as second:
        _with_rawmode(second, plan.low)
        second.load()
        low = np.asarray(second)
    if low.shape != high.shape:
        raise ValueError("the two 16-bit decoding passes disagree")
    samples = (high << 8) | low
    alpha = samples[..., 3] if samples.shape[-1] == 4 else None
    return np.ascontiguousarray(samples[..., :3]), alpha, plan.source_mode


def _describe_decode_error(err: BaseException) -> str:
    if isinstance(err, _UnsupportedMode):
        return str(err)
    if isinstance(err, UnidentifiedImageError):
        return "not an image file, or an image format that cannot be read"
    if isinstance(err, PILImage.DecompressionBombError):
        return f"image too large ({_one_line(str(err))})"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, OSError) and err.errno is not None:
        # A failure of the disk or the file system, not of the data: errno says it best.
        return f"cannot read the file ({_os_reason(err)})"
    message = _one_line(str(err))
    if "truncated" in message.lower() or isinstance(err, EOFError):
        return "truncated file (the image data ends early)"
    return f"corrupt or unsupported image data ({message or type(err).__name__})"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _os_reason(err: OSError) -> str:
    return err.strerror or _one_line(str(err)) or type(err).__name__


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


#: PNG text keyword (and the meaning of JPEG comments / TIFF descriptions) of irc's records.
TEXT_KEY = "irc"


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the file's header, without decoding pixels (a one-line
    :class:`ImageReadError` when it is not an image)."""
    path = Path(path)
    _check_is_file(path)
    try:
        with _pillow_settings_for_reading(), PILImage.open(path) as im:
            return int(im.width), int(im.height)
    except Exception as err:  # noqa: BLE001 - any unreadable header is one line
        raise ImageReadError(path, _describe_decode_error(err)) from err


def read_description(path: str | os.PathLike[str]) -> str | None:
    """The record :func:`write_image` stored in a file's metadata (``None`` when there is none)."""
    with PILImage.open(path) as im:
        info = im.info
        if TEXT_KEY in info:
            return str(info[TEXT_KEY])
        if "comment" in info:
            raw = info["comment"]
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        tags = getattr(im, "tag_v2", None)
        if tags is not None and 270 in tags:
            return str(tags[270])
    return None


def write_image(
    path: str | os.PathLike[str],
    image: Image,
    *,
    quality: int = 95,
    bit_depth: int | None = None,
) -> Path:
    """Writes an image atomically, keeping bit depth, alpha, ICC and EXIF where the format can.

    The format comes from the suffix of ``path``. Missing folders are created. The data goes to
    a hidden ``.<name>.<random>.tmp`` file beside the target, is fsynced, and then replaces the
    target in one rename; on any failure the temporary file is removed and an existing target
    is left untouched.

    Args:
        path: Target file; its suffix must be one of ``SUPPORTED_SUFFIXES``.
        image: What to write. Pixels are clipped to ``[0, 1]`` (NaN as 0) and quantised as
            ``round(x * maxval)``.
        quality: 1..100, for JPEG and WebP. For WebP, 100 selects lossless compression.
        bit_depth: 8 or 16; ``None`` keeps ``image.bit_depth``. Formats that only hold 8 bits
            (JPEG, BMP, WebP) are written at 8 bits, with a warning if 16 was asked for.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        UsageError: Unknown suffix, or ``quality`` / ``bit_depth`` out of range.
        IrcError: The file or its folder could not be written (message names the path).
    """
    path = Path(path)
    fmt = _format_for_suffix(path)
    if not isinstance(image, Image):
        raise TypeError(f"write_image expects an irc.io.Image, got {type(image).__name__}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise UsageError(f"quality must be a whole number from 1 to 100, got {quality!r}")
    depth = image.bit_depth if bit_depth is None else bit_depth
    if depth not in (8, 16):
        raise UsageError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if depth == 16 and fmt not in _DEEP_FORMATS:
        if bit_depth is not None:
            warnings.warn(
                f"{path.name}: {fmt} holds only 8 bits per channel; writing 8-bit",
                UserWarning,
                stacklevel=2,
            )
        depth = 8

    alpha = image.alpha
    pixels = image.pixels
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        # Composite onto white, as a viewer shows a transparent image: merely dropping alpha
        # would reveal whatever colour hides under fully transparent pixels.
        warnings.warn(f"{path.name}: {fmt} cannot store transparency; alpha composited onto white", UserWarning, stacklevel=2)
        pixels = pixels * alpha + (1.0 - alpha)
        alpha = None

    samples = _quantise(pixels, depth).transpose(1, 2, 0)
    if alpha is not None:
        samples = np.concatenate([samples, _quantise(alpha, depth).transpose(1, 2, 0)], axis=-1)
    samples = np.ascontiguousarray(samples)
    icc = image.icc_profile if fmt in _ICC_FORMATS else None
    if icc is not None and not _icc_fits(icc, image.channels, fmt):
        icc = None
    exif = _exif_for_writing(image.exif) if fmt in _EXIF_FORMATS else None

    encode = _encoder(fmt, samples, quality=quality, icc=icc, exif=exif, text=image.description)
    _write_atomically(path, encode)
    return path


def _format_for_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    try:
        return _FORMAT_BY_SUFFIX[suffix]
    except KeyError:
        shown = suffix or "(none)"
        raise UsageError(
            f"{path}: cannot write images with suffix {shown}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        ) from None


def _quantise(values: np.ndarray, depth: int) -> np.ndarray:
    """``round(clip(x) * maxval)`` as integers, a block of rows at a time: the float temporaries
    stay small however large the image (peak memory per pixel, see the README)."""
    maxval = 65535 if depth == 16 else 255
    dtype = np.uint16 if depth == 16 else np.uint8
    out = np.empty(values.shape, dtype=dtype)
    rows = max(1, (1 << 22) // max(1, values[..., 0, :].size))
    for start in range(0, values.shape[-2], rows):
        block = np.nan_to_num(values[..., start : start + rows, :], nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(block, 0.0, 1.0, out=block)
        block *= np.float32(maxval)
        out[..., start : start + rows, :] = np.rint(block)
    return out


def _icc_fits(icc: bytes, channels: int, fmt: str) -> bool:
    """Whether a profile's colour space (header bytes 16..20) matches what is written."""
    space = icc[16:20]
    if channels == 1 and fmt != "WEBP":  # WebP stores grey as RGB
        return space == b"GRAY"
    return space == b"RGB "


def _exif_for_writing(exif: bytes | None) -> bytes | None:
    # The pixels are always upright, so a stale orientation would rotate the output on display.
    if not exif:
        return None
    raw = _with_exif_header(bytes(exif))
    try:
        parsed = PILImage.Exif()
        parsed.load(raw)
        if parsed.get(_ORIENTATION_TAG, 1) != 1:
            parsed[_ORIENTATION_TAG] = 1
            raw = _with_exif_header(parsed.tobytes())
    except Exception:  # noqa: BLE001 - unreadable EXIF is dropped rather than failing a write
        return None
    return raw


_Encoder = Callable[[IO[bytes]], None]


def _encoder(
    fmt: str, samples: np.ndarray, *, quality: int, icc: bytes | None, exif: bytes | None, text: str | None = None
) -> _Encoder:
    """Picks how ``(H, W, K)`` samples (K = colour + alpha channels) become a file."""
    channels = samples.shape[-1]
    if samples.dtype == np.uint16 and channels > 1:
        if fmt == "PNG":
            return lambda fh: _encode_png16(fh, samples, icc=icc, exif=exif, text=text)
        if channels == 2:
            # Pillow (and many other readers) cannot open 16-bit grey+alpha TIFF; RGBA can.
            samples = samples[..., [0, 0, 0, 1]]
        return lambda fh: _encode_tiff16(fh, samples, icc=icc, text=text)

    if fmt == "WEBP" and channels in (1, 2):
        samples = samples[..., [0, 0, 0]] if channels == 1 else samples[..., [0, 0, 0, 1]]
    pil = PILImage.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)
    params: dict[str, object] = {}
    if icc is not None:
        params["icc_profile"] = icc
    if exif is not None:
        params["exif"] = exif
    if text is not None:
        if fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_itxt(TEXT_KEY, text)
            params["pnginfo"] = info
        elif fmt == "JPEG":
            params["comment"] = text.encode("utf-8")
        elif fmt == "TIFF":
            params["description"] = _ascii(text)
    if fmt == "JPEG":
        params["quality"] = quality
        if quality >= 90:
            # At high quality, halving chroma resolution costs more than the bytes it saves.
            params["subsampling"] = 0
    elif fmt == "WEBP":
        params.update(quality=quality, lossless=quality == 100, exact=True)
    elif fmt == "TIFF" and features.check_codec("libtiff"):
        params["compression"] = "tiff_adobe_deflate"
    return lambda fh: pil.save(fh, format=fmt, **params)


def _write_atomically(path: Path, encode: _Encoder) -> None:
    if path.is_dir():
        raise IrcError(f"{path}: is a directory")
    try:
        with atomic_path(path) as temp:
            with open(temp, "wb") as fh:
                encode(fh)
    except OSError as err:
        raise IrcError(f"{path}: cannot write the image ({_os_reason(err)})") from err



# --- 16-bit PNG ------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA
_BLOCK_BYTES = 1 << 22  # rows are filtered and compressed in blocks of about this many bytes


def _png_chunk(fh: IO[bytes], kind: bytes, data: bytes) -> None:
    fh.write(struct.pack(">I", len(data)))
    fh.write(kind)
    fh.write(data)
    fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def _encode_png16(
    fh: IO[bytes], samples: np.ndarray, *, icc: bytes | None, exif: bytes | None, text: str | None = None
) -> None:
    """Writes ``(H, W, K)`` uint16 samples as a 16-bit PNG (K = 1..4 as in ``_PNG_COLOUR_TYPE``)."""
    height, width, channels = samples.shape
    fh.write(_PNG_SIGNATURE)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    _png_chunk(fh, b"IHDR", header)
    if icc is not None:
        _png_chunk(fh, b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif is not None:
        # PNG's eXIf chunk holds the TIFF-structured EXIF without JPEG's "Exif\0\0" marker.
        _png_chunk(fh, b"eXIf", exif.removeprefix(_EXIF_HEADER))
    if text is not None:
        # iTXt: keyword, null, no compression, method 0, empty language and translated keyword
        _png_chunk(fh, b"iTXt", TEXT_KEY.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))
    rows = samples.astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    pixel_bytes = 2 * channels
    compressor = zlib.compressobj(6)
    previous = np.zeros(rows.shape[1], dtype=np.uint8)
    step = max(1, _BLOCK_BYTES // rows.shape[1])
    for start in range(0, height, step):
        block = rows[start : start + step]
        data = compressor.compress(_paeth_filter(block, previous, pixel_bytes).tobytes())
        if data:
            _png_chunk(fh, b"IDAT", data)
        previous = block[-1]
    _png_chunk(fh, b"IDAT", compressor.flush())
    _png_chunk(fh, b"IEND", b"")


def _paeth_filter(rows: np.ndarray, previous: np.ndarray, pixel_bytes: int) -> np.ndarray:
    """PNG filter type 4 for a block of ``(n, stride)`` byte rows, with its filter-type column.

    Paeth predicts each byte from its left, upper and upper-left neighbours; on photographs it
    compresses best of the five PNG filters. Encoding only reads original bytes, so unlike
    decoding it vectorises fully.
    """
    x = rows.astype(np.int16)
    up = np.empty_like(x)
    up[0] = previous
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, pixel_bytes:] = x[:, :-pixel_bytes]
    up_left = np.zeros_like(x)
    up_left[:, pixel_bytes:] = up[:, :-pixel_bytes]
    # Paeth's p = left + up - up_left; its distances to the three neighbours reduce to these.
    up_change = up - up_left
    left_change = left - up_left
    dist_left = np.abs(up_change)
    dist_up = np.abs(left_change)
    dist_up_left = np.abs(up_change + left_change)
    predicted = np.where(
        (dist_left <= dist_up) & (dist_left <= dist_up_left),
        left,
        np.where(dist_up <= dist_up_left, up, up_left),
    )
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - predicted).astype(np.uint8)
    return out


# --- 16-bit TIFF -----------------------------------------------------------------------------


def _ascii(text: str) -> str:
    """TIFF strings are 7-bit ASCII: other characters as ``\\uXXXX`` escapes."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _encode_tiff16(fh: IO[bytes], samples: np.ndarray, *, icc: bytes | None, text: str | None = None) -> None:
    """Writes ``(H, W, 3 or 4)`` uint16 samples as a deflate-compressed TIFF through imageio's
    tifffile plugin, with horizontal differencing (neighbouring 16-bit samples are close, so their
    differences compress far better) and RGBA marked as unassociated alpha, matching ``Image``."""
    import imageio.v3 as iio

    extra = {"extrasamples": ["unassalpha"]} if samples.shape[-1] == 4 else {}
    tags = [(34675, 7, len(icc), icc, True)] if icc is not None else []
    try:
        data = iio.imwrite(
            "<bytes>", samples, extension=".tif", plugin="tifffile", photometric="rgb", compression="zlib",
            predictor=True, extratags=tags, description=None if text is None else _ascii(text), **extra,
        )  # fmt: skip
    except ValueError as err:  # tifffile refuses data a classic TIFF cannot hold (> 4 GB)
        raise OSError(errno.EFBIG, f"too large for a TIFF file ({err})") from None
    fh.write(data)


def _resize_plane(plane: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Resizes an ``(H, W)`` float plane in ``[0, 1]`` bicubically; the result is clipped to it.

    Pillow's resize widens the filter when shrinking, so this also anti-aliases a downscale.
    """
    resized = PILImage.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (width, height), PILImage.Resampling.BICUBIC
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
