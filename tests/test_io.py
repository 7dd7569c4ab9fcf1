"""Tests for irc.io: every mode and depth round-trips, metadata survives, bad files fail cleanly.

Fixtures are generated in tmp_path. 16-bit colour files are also built by the small, slow but
obviously correct reference encoders below (every PNG filter type, Adam7 interlacing, big-endian
uncompressed TIFF), so the reader is checked against files it did not write itself.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile, ImageOps

from irc import io as irc_io
from irc.errors import ImageReadError, IrcError, UsageError
from irc.io import (
    MAX_PIXELS_DEFAULT,
    SUPPORTED_SUFFIXES,
    Image,
    is_image_path,
    read_image,
    write_image,
)

DATA_ROOT = Path(
    os.environ.get("IRC_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data")
)

H, W = 24, 36  # non-square on purpose: a transposed axis cannot go unnoticed


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _samples(shape, depth: int, seed: int = 0) -> np.ndarray:
    dtype = np.uint16 if depth == 16 else np.uint8
    return _rng(seed).integers(0, 2**depth, size=shape, dtype=np.int64).astype(dtype)


def _ints(values: np.ndarray, depth: int) -> np.ndarray:
    """Float [0, 1] back to integer samples, as the writer quantises."""
    return np.rint(np.asarray(values, dtype=np.float64) * (2**depth - 1)).astype(np.int64)


def _chw(hwc: np.ndarray) -> np.ndarray:
    return hwc[..., None].transpose(2, 0, 1) if hwc.ndim == 2 else hwc.transpose(2, 0, 1)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _predict(kind: int, a: int, b: int, c: int) -> int:
    return [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]


def _filter_rows(rows: list[bytes], bpp: int) -> bytes:
    """Filters scanlines cycling through all five PNG filter types (reference, byte by byte)."""
    out = bytearray()
    prev = bytes(len(rows[0]))
    for index, row in enumerate(rows):
        kind = index % 5
        out.append(kind)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            c = prev[i - bpp] if i >= bpp else 0
            out.append((x - _predict(kind, a, prev[i], c)) & 0xFF)
        prev = row
    return bytes(out)


# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = [
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)
]


def _reference_png16(
    samples: np.ndarray, *, interlace: bool = False, icc: bytes | None = None
) -> bytes:
    """A 16-bit PNG written independently of irc.io (all filters; optional Adam7)."""
    h, w, c = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    big = samples.astype(">u2")
    if interlace:
        data = b""
        for x0, y0, dx, dy in _ADAM7:
            sub = big[y0::dy, x0::dx]
            if sub.size:
                data += _filter_rows([r.tobytes() for r in sub], bpp)
    else:
        data = _filter_rows([r.tobytes() for r in big], bpp)
    out = b"\x89PNG\r\n\x1a\n"
    out += _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, int(interlace)))
    if icc is not None:
        out += _png_chunk(b"iCCP", b"test\x00\x00" + zlib.compress(icc))
    out += _png_chunk(b"IDAT", zlib.compress(data))
    return out + _png_chunk(b"IEND", b"")


def _reference_png16_decode(blob: bytes) -> np.ndarray:
    """Decodes a non-interlaced 16-bit PNG byte by byte, to check irc.io's encoder on its own."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
    w, h, depth, colour_type, _, _, interlace = header
    assert depth == 16 and interlace == 0
    c = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    stride, bpp = w * c * 2, c * 2
    raw = zlib.decompress(idat)
    prev = bytearray(stride)
    rows = []
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            cc = prev[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + _predict(kind, a, prev[i], cc)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), dtype=">u2").reshape(h, w, c).astype(np.uint16)


def _reference_tiff16(samples: np.ndarray, order: str = ">") -> bytes:
    """An uncompressed 16-bit RGB(A) TIFF in byte order ``order``, independent of irc.io."""
    h, w, c = samples.shape
    data = samples.astype(order + "u2").tobytes()
    tags = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, c, None),  # out of line
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 8),
        (277, 3, 1, c),
        (278, 4, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    if c == 4:
        tags.append((338, 3, 1, 2))
    bits_offset = 8 + len(data)
    bits = struct.pack(order + "H" * c, *([16] * c))
    ifd_offset = bits_offset + len(bits)
    ifd = struct.pack(order + "H", len(tags))
    for tag, kind, count, value in tags:
        if value is None:
            field = struct.pack(order + "I", bits_offset)
        elif kind == 3:
            field = struct.pack(order + "HH", value, 0)
        else:
            field = struct.pack(order + "I", value)
        ifd += struct.pack(order + "HHI", tag, kind, count) + field
    ifd += struct.pack(order + "I", 0)
    magic = b"MM\x00*" if order == ">" else b"II*\x00"
    return magic + struct.pack(order + "I", ifd_offset) + data + bits + ifd


def _save_pil(path: Path, pil: PILImage.Image, **params) -> Path:
    pil.save(path, **params)
    return path


def _assert_one_line_error(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert path.name in message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


# --------------------------------------------------------------------------------------------
# round trips: 8-bit modes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "channels", "has_alpha"),
    [("L", 1, False), ("RGB", 3, False), ("RGBA", 3, True), ("LA", 1, True)],
)
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_8bit_modes_round_trip_exactly(tmp_path, mode, channels, has_alpha, suffix):
    bands = len(mode)
    arr = _samples((H, W, bands) if bands > 1 else (H, W), 8)
    src = _save_pil(tmp_path / f"src{suffix}", PILImage.fromarray(arr))

    img = read_image(src)
    assert img.source_mode == mode
    assert img.bit_depth == 8
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (channels, H, W)
    assert (img.height, img.width, img.channels) == (H, W, channels)
    hwc = arr if arr.ndim == 3 else arr[..., None]
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(hwc[..., :channels]))
    if has_alpha:
        assert img.alpha is not None and img.alpha.shape == (1, H, W)
        np.testing.assert_array_equal(_ints(img.alpha, 8), _chw(hwc[..., -1]))
    else:
        assert img.alpha is None
    assert 0.0 <= img.pixels.min() and img.pixels.max() <= 1.0

    out = write_image(tmp_path / f"out{suffix}", img)
    with PILImage.open(out) as written:
        assert written.mode == mode
        np.testing.assert_array_equal(np.asarray(written), arr)
    again = read_image(out)
    np.testing.assert_array_equal(again.pixels, img.pixels)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_round_trips_exactly(tmp_path, suffix):
    arr = _samples((H, W), 16)
    src = _save_pil(tmp_path / f"src{suffix}", PILImage.fromarray(arr))

    img = read_image(src)
    assert img.source_mode.startswith("I;16")
    assert img.bit_depth == 16 and img.channels == 1 and img.alpha is None
    np.testing.assert_array_equal(_ints(img.pixels, 16), arr[None])

    for out_suffix in (".png", ".tif"):
        out = write_image(tmp_path / f"out{out_suffix}", img)
        with PILImage.open(out) as written:
            assert written.mode.startswith("I;16")
            np.testing.assert_array_equal(np.asarray(written).astype(np.uint16), arr)
        np.testing.assert_array_equal(_ints(read_image(out).pixels, 16), arr[None])


def test_mode_I_grey_is_read_as_16bit(tmp_path):
    arr = _samples((H, W), 16).astype(np.int32)
    src = _save_pil(tmp_path / "i32.tif", PILImage.fromarray(arr))  # int32 -> mode "I"
    img = read_image(src)
    assert img.source_mode == "I" and img.bit_depth == 16
    np.testing.assert_array_equal(_ints(img.pixels, 16), arr[None])


# --------------------------------------------------------------------------------------------
# round trips: 16-bit colour (independent reference files)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_colour_png_from_reference_encoder_reads_exactly(tmp_path, channels, interlace):
    arr = _samples((13, 11, channels), 16, seed=channels)
    # Small values too: a decoder that kept only the high byte would return zeros for them.
    arr[0, 0] = 1
    src = tmp_path / "ref.png"
    src.write_bytes(_reference_png16(arr, interlace=interlace))

    img = read_image(src)
    colour = 1 if channels == 2 else 3
    assert img.bit_depth == 16
    assert img.source_mode == {2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    assert img.pixels.shape == (colour, 13, 11)
    np.testing.assert_array_equal(_ints(img.pixels, 16), _chw(arr[..., :colour]))
    if channels in (2, 4):
        np.testing.assert_array_equal(_ints(img.alpha, 16), _chw(arr[..., -1]))
    else:
        assert img.alpha is None


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_png_writer_matches_reference_decoder(tmp_path, channels):
    arr = _samples((9, 14, channels), 16, seed=10 + channels)
    colour = 1 if channels == 2 else 3
    img = Image(
        pixels=_chw(arr[..., :colour]).astype(np.float32) / 65535,
        alpha=_chw(arr[..., -1]).astype(np.float32) / 65535 if channels in (2, 4) else None,
        bit_depth=16,
        icc_profile=None,
        source_mode="RGB",
        format="PNG",
    )
    out = write_image(tmp_path / "out.png", img)
    np.testing.assert_array_equal(_reference_png16_decode(out.read_bytes()), arr)
    again = read_image(out)
    np.testing.assert_array_equal(again.pixels, img.pixels)
    np.testing.assert_array_equal(again.alpha, img.alpha)


@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_tiff_reads_and_writes_exactly(tmp_path, channels, order):
    arr = _samples((H, W, channels), 16, seed=20 + channels)
    arr[0, 0] = 1
    src = tmp_path / "ref.tif"
    src.write_bytes(_reference_tiff16(arr, order))  # uncompressed: Pillow's raw path

    img = read_image(src)
    assert img.bit_depth == 16 and img.format == "TIFF"
    assert img.source_mode == ("RGBA" if channels == 4 else "RGB")
    np.testing.assert_array_equal(_ints(img.pixels, 16), _chw(arr[..., :3]))
    if channels == 4:
        np.testing.assert_array_equal(_ints(img.alpha, 16), _chw(arr[..., 3]))

    # irc.io's own TIFF is deflate + predictor, little-endian: Pillow's libtiff path.
    out = write_image(tmp_path / "out.tiff", img)
    with PILImage.open(out) as written:
        assert written.info.get("compression") == "tiff_adobe_deflate"
        # Pillow's own 8-bit view must agree with the high bytes.
        high_bytes = (arr >> 8).astype(np.uint8)[..., : len(written.mode)]
        np.testing.assert_array_equal(np.asarray(written), high_bytes)
    again = read_image(out)
    np.testing.assert_array_equal(again.pixels, img.pixels)
    np.testing.assert_array_equal(again.alpha, img.alpha)


def test_16bit_grey_alpha_to_tiff_is_stored_as_rgba(tmp_path):
    arr = _samples((H, W, 2), 16, seed=3)
    src = tmp_path / "la16.png"
    src.write_bytes(_reference_png16(arr))
    img = read_image(src)
    out = write_image(tmp_path / "la16.tif", img)
    again = read_image(out)
    assert again.channels == 3 and again.bit_depth == 16
    for c in range(3):
        np.testing.assert_array_equal(_ints(again.pixels[c], 16), arr[..., 0])
    np.testing.assert_array_equal(_ints(again.alpha, 16), arr[None, ..., 1])


def test_16bit_source_written_as_8bit_on_request(tmp_path):
    arr = _samples((H, W, 3), 16, seed=5)
    src = tmp_path / "rgb16.png"
    src.write_bytes(_reference_png16(arr))
    img = read_image(src)
    out = write_image(tmp_path / "rgb8.png", img, bit_depth=8)
    with PILImage.open(out) as written:
        assert written.mode == "RGB"
    again = read_image(out)
    assert again.bit_depth == 8
    expected = np.rint(arr.transpose(2, 0, 1) / 65535 * 255)
    np.testing.assert_array_equal(_ints(again.pixels, 8), expected)


def test_8bit_source_written_as_16bit_on_request(tmp_path):
    arr = _samples((H, W, 3), 8)
    img = read_image(_save_pil(tmp_path / "rgb8.png", PILImage.fromarray(arr)))
    out = write_image(tmp_path / "rgb16.png", img, bit_depth=16)
    written = _reference_png16_decode(out.read_bytes())
    np.testing.assert_array_equal(written, arr.astype(np.uint16) * 257)


# --------------------------------------------------------------------------------------------
# palette, CMYK, 1-bit, colour key
# --------------------------------------------------------------------------------------------


def _palette_image(grey: bool, transparency: bool) -> tuple[PILImage.Image, np.ndarray]:
    index = _samples((H, W), 8) % 16
    if grey:
        palette = [v for i in range(16) for v in (i * 17,) * 3]
    else:
        palette = [int(v) for v in _samples((16 * 3,), 8, seed=7)]
    pil = PILImage.frombytes("P", (W, H), index.astype(np.uint8).tobytes())
    pil.putpalette(palette)
    if transparency:
        pil.info["transparency"] = 3
    rgb = np.asarray(palette, dtype=np.uint8).reshape(16, 3)[index]
    return pil, rgb


@pytest.mark.parametrize("transparency", [False, True])
def test_colour_palette_becomes_rgb(tmp_path, transparency):
    pil, rgb = _palette_image(grey=False, transparency=transparency)
    params = {"transparency": 3} if transparency else {}
    src = _save_pil(tmp_path / "pal.png", pil, **params)
    img = read_image(src)
    assert img.source_mode == "P" and img.channels == 3 and img.bit_depth == 8
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(rgb))
    index = np.asarray(pil)
    if transparency:
        np.testing.assert_array_equal(img.alpha[0] == 0, index == 3)
        assert set(np.unique(img.alpha)) <= {0.0, 1.0}
        out = read_image(write_image(tmp_path / "out.png", img))
        np.testing.assert_array_equal(out.alpha, img.alpha)
    else:
        assert img.alpha is None


@pytest.mark.parametrize("transparency", [False, True])
def test_grey_palette_becomes_grey(tmp_path, transparency):
    pil, rgb = _palette_image(grey=True, transparency=transparency)
    params = {"transparency": 3} if transparency else {}
    src = _save_pil(tmp_path / "pal.png", pil, **params)
    img = read_image(src)
    assert img.source_mode == "P" and img.channels == 1
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(rgb[..., 0]))
    assert (img.alpha is not None) == transparency
    out = write_image(tmp_path / "out.png", img)
    with PILImage.open(out) as written:
        assert written.mode == ("LA" if transparency else "L")


def test_rgb_file_that_happens_to_be_grey_stays_rgb(tmp_path):
    grey = _samples((H, W), 8)
    src = _save_pil(tmp_path / "g.png", PILImage.fromarray(np.stack([grey] * 3, -1)))
    assert read_image(src).channels == 3


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted_to_rgb(tmp_path, suffix):
    cmyk = PILImage.frombytes("CMYK", (W, H), _samples((H, W, 4), 8).tobytes())
    src = _save_pil(tmp_path / f"cmyk{suffix}", cmyk)
    img = read_image(src)
    assert img.source_mode == "CMYK" and img.channels == 3 and img.bit_depth == 8
    with PILImage.open(src) as pil:
        expected = np.asarray(pil.convert("RGB"))
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(expected))
    assert img.icc_profile is None


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_1bit_is_grey_zero_or_one(tmp_path, suffix):
    bits = _samples((H, W), 8) > 127
    src = _save_pil(tmp_path / f"bits{suffix}", PILImage.fromarray(bits))
    with PILImage.open(src) as pil:
        assert pil.mode in ("1", "P", "L")
        source_mode = pil.mode
    img = read_image(src)
    assert img.source_mode == source_mode and img.channels == 1 and img.bit_depth == 8
    np.testing.assert_array_equal(img.pixels[0], bits.astype(np.float32))


def test_png_colour_key_becomes_alpha(tmp_path):
    arr = _samples((H, W, 3), 8) // 2
    arr[2, 3] = (255, 0, 255)
    src = _save_pil(tmp_path / "key.png", PILImage.fromarray(arr), transparency=(255, 0, 255))
    img = read_image(src)
    assert img.alpha is not None
    expected = np.ones((H, W), np.float32)
    expected[2, 3] = 0
    np.testing.assert_array_equal(img.alpha[0], expected)


# --------------------------------------------------------------------------------------------
# other formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_bmp_round_trips_exactly(tmp_path, mode):
    arr = _samples((H, W, 3) if mode == "RGB" else (H, W), 8)
    img = read_image(_save_pil(tmp_path / "src.bmp", PILImage.fromarray(arr)))
    assert img.format == "BMP" and img.channels == len(mode)
    out = write_image(tmp_path / "out.bmp", img)
    np.testing.assert_array_equal(read_image(out).pixels, img.pixels)


@pytest.mark.parametrize("bands", [2, 3, 4])
def test_webp_quality_100_is_lossless(tmp_path, bands):
    arr = _samples((H, W, bands), 8)
    if bands in (2, 4):
        arr[..., -1][::3] = 0  # fully transparent pixels must keep their colour too
    img = read_image(_save_pil(tmp_path / "src.png", PILImage.fromarray(arr)))
    out = write_image(tmp_path / "out.webp", img, quality=100)
    again = read_image(out)
    assert again.format == "WEBP" and again.channels == 3  # WebP has no grey mode
    np.testing.assert_array_equal(again.pixels, np.broadcast_to(img.pixels, again.pixels.shape))
    if bands in (2, 4):
        np.testing.assert_array_equal(again.alpha, img.alpha)
    else:
        assert again.alpha is None


def test_webp_lossy_and_grey_stored_as_rgb(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W]
    grey = ((xx * 5 + yy * 3) % 256).astype(np.uint8)
    img = read_image(_save_pil(tmp_path / "g.png", PILImage.fromarray(grey)))
    again = read_image(write_image(tmp_path / "g.webp", img, quality=90))
    assert again.channels == 3
    assert np.abs(again.pixels - img.pixels).mean() < 0.03


def test_jpeg_round_trip_within_tolerance(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W]
    arr = np.stack([xx * 7, yy * 9, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    img = read_image(_save_pil(tmp_path / "src.png", PILImage.fromarray(arr)))
    out = write_image(tmp_path / "out.jpg", img, quality=95)
    again = read_image(out)
    assert again.format == "JPEG" and again.pixels.shape == img.pixels.shape
    assert np.abs(again.pixels - img.pixels).mean() < 0.01
    with PILImage.open(out) as written:
        assert written.mode == "RGB"
        assert written.layer[0][1:3] == written.layer[1][1:3]  # 4:4:4 at high quality


def test_jpeg_quality_is_read_from_the_files_tables(tmp_path):
    """libjpeg's quality comes back exactly from the luminance table Pillow wrote (colour, grey,
    4:4:4, the clamped extremes); other formats have none; a table of another encoder maps to the
    libjpeg quality with the nearest sum."""
    yy, xx = np.mgrid[0:H, 0:W]
    arr = np.stack([xx * 7, yy * 9, (xx + yy) * 4], -1).clip(0, 255).astype(np.uint8)
    for quality in (1, 5, 10, 30, 49, 50, 51, 75, 95, 100):
        PILImage.fromarray(arr).save(tmp_path / f"q{quality}.jpg", quality=quality)
        assert read_image(tmp_path / f"q{quality}.jpg").jpeg_quality == quality
    PILImage.fromarray(arr[..., 0]).save(tmp_path / "grey.jpg", quality=20)
    PILImage.fromarray(arr).save(tmp_path / "444.jpg", quality=40, subsampling=0)
    assert read_image(tmp_path / "grey.jpg").jpeg_quality == 20 and read_image(tmp_path / "444.jpg").jpeg_quality == 40
    assert read_image(_save_pil(tmp_path / "a.png", PILImage.fromarray(arr))).jpeg_quality is None
    standard = irc_io._STANDARD_LUMA_TABLE
    assert irc_io.jpeg_quality(standard) == 50 and irc_io.jpeg_quality([v + 1 for v in standard]) == 49


def test_16bit_to_8bit_only_formats(tmp_path):
    arr = _samples((H, W, 3), 16)
    src = tmp_path / "rgb16.png"
    src.write_bytes(_reference_png16(arr))
    img = read_image(src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # implied depth: silently 8-bit
        for suffix in (".jpg", ".bmp", ".webp"):
            out = write_image(tmp_path / f"out{suffix}", img, quality=100)
            assert read_image(out).bit_depth == 8
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "explicit.bmp", img, bit_depth=16)
    np.testing.assert_array_equal(
        _ints(read_image(tmp_path / "explicit.bmp").pixels, 8), np.rint(_chw(arr) / 65535 * 255)
    )


def test_quantisation_clips_and_treats_nan_as_zero(tmp_path):
    pixels = np.array([[[-0.5, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 1.7, np.nan]]], np.float32)
    img = Image(pixels, None, 8, None, "L", None)
    out = write_image(tmp_path / "q.png", img)
    with PILImage.open(out) as written:
        # 0.5/255 rounds half to even (0); 0.5 * 255 = 127.5 rounds to even (128).
        assert np.asarray(written)[0].tolist() == [0, 0, 0, 1, 128, 255, 255, 0]


# --------------------------------------------------------------------------------------------
# alpha
# --------------------------------------------------------------------------------------------


def test_alpha_dropped_for_jpeg_and_bmp_with_warning(tmp_path):
    arr = _samples((H, W, 4), 8)
    img = read_image(_save_pil(tmp_path / "rgba.png", PILImage.fromarray(arr)))
    for suffix in (".jpg", ".bmp"):
        with pytest.warns(UserWarning, match="alpha"):
            out = write_image(tmp_path / f"out{suffix}", img)
        again = read_image(out)
        assert again.alpha is None and again.channels == 3


def test_with_pixels_keeps_metadata_and_alpha_when_size_unchanged():
    alpha = _rng().random((1, H, W), dtype=np.float32)
    img = Image(np.zeros((3, H, W), np.float32), alpha, 16, b"icc", "RGBA", "PNG", b"Exif\x00\x00")
    new = img.with_pixels(np.ones((1, H, W)))
    assert new.pixels.dtype == np.float32 and new.channels == 1
    assert new.alpha is img.alpha
    assert (new.bit_depth, new.icc_profile, new.source_mode, new.format, new.exif) == (
        16,
        b"icc",
        "RGBA",
        "PNG",
        b"Exif\x00\x00",
    )
    assert img.pixels.max() == 0  # the original is untouched


def test_with_pixels_resizes_alpha_to_new_size():
    alpha = np.zeros((1, H, W), np.float32)
    alpha[:, :, W // 2 :] = 1.0  # a hard edge: bicubic overshoots, so clipping is exercised
    img = Image(np.zeros((3, H, W), np.float32), alpha, 8, None, "RGBA", "PNG")
    up = img.with_pixels(np.zeros((3, 2 * H, 2 * W), np.float32))
    assert up.alpha.shape == (1, 2 * H, 2 * W) and up.alpha.dtype == np.float32
    assert up.alpha.min() >= 0.0 and up.alpha.max() <= 1.0
    assert up.alpha[0, :, 0].max() == 0.0 and up.alpha[0, :, -1].min() == 1.0
    down = img.with_pixels(np.zeros((3, H // 3, W // 3), np.float32))
    assert down.alpha.shape == (1, H // 3, W // 3)
    ones = np.ones((1, H, W), np.float32)
    opaque = Image(np.zeros((1, H, W), np.float32), ones, 8, None, "LA", None)
    np.testing.assert_array_equal(opaque.with_pixels(np.zeros((1, 50, 7))).alpha, 1.0)


def test_image_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        Image(np.zeros((H, W), np.float32), None, 8, None, "L", None)
    with pytest.raises(ValueError, match="shape"):
        Image(np.zeros((2, H, W), np.float32), None, 8, None, "L", None)
    with pytest.raises(ValueError, match="alpha"):
        Image(np.zeros((3, H, W), np.float32), np.zeros((1, H, W + 1)), 8, None, "RGBA", None)
    with pytest.raises(ValueError, match="bit_depth"):
        Image(np.zeros((3, H, W), np.float32), None, 12, None, "RGB", None)


# --------------------------------------------------------------------------------------------
# ICC and EXIF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp"])
@pytest.mark.parametrize("depth", [8, 16])
def test_icc_profile_preserved(tmp_path, suffix, depth):
    icc = _srgb_icc()
    arr = _samples((H, W, 3), depth)
    src = tmp_path / "src.png"
    if depth == 8:
        _save_pil(src, PILImage.fromarray(arr), icc_profile=icc)
    else:
        src.write_bytes(_reference_png16(arr, icc=icc))
    img = read_image(src)
    assert img.icc_profile == icc
    out = write_image(tmp_path / f"out{suffix}", img)
    with PILImage.open(out) as written:
        assert written.info.get("icc_profile") == icc
    assert read_image(out).icc_profile == icc


def test_icc_dropped_where_it_cannot_apply(tmp_path):
    icc = _srgb_icc()
    rgb = Image(np.zeros((3, H, W), np.float32), None, 8, icc, "RGB", None)
    grey = Image(np.zeros((1, H, W), np.float32), None, 8, icc, "L", None)
    cases = [(tmp_path / "a.bmp", rgb), (tmp_path / "b.png", grey), (tmp_path / "c.jpg", grey)]
    for path, img in cases:
        write_image(path, img)
        with PILImage.open(path) as written:
            assert not written.info.get("icc_profile")


def _oriented_jpeg(path: Path, orientation: int) -> np.ndarray:
    yy, xx = np.mgrid[0:20, 0:40]  # 40 wide, 20 high
    arr = np.stack([xx * 6, yy * 12, np.full_like(xx, 90)], -1).astype(np.uint8)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "irc-test-camera"
    PILImage.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    return arr


def test_exif_orientation_applied_and_reset(tmp_path):
    src = tmp_path / "rot6.jpg"
    _oriented_jpeg(src, 6)
    img = read_image(src)
    assert img.pixels.shape == (3, 40, 20)  # rotated upright: now 20 wide, 40 high
    with PILImage.open(src) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil))
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(expected))

    assert img.exif is not None and img.exif.startswith(b"Exif\x00\x00")
    exif = PILImage.Exif()
    exif.load(img.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "irc-test-camera"

    for suffix in (".jpg", ".png", ".webp", ".tif"):
        out = write_image(tmp_path / f"out{suffix}", img)
        with PILImage.open(out) as written:
            assert written.size == (20, 40)
            assert written.getexif().get(0x0112) == 1
            assert written.getexif().get(0x010F) == "irc-test-camera"
        assert read_image(out).pixels.shape == (3, 40, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    arr = _samples((5, 8, 3), 8, seed=orientation)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    src = _save_pil(tmp_path / "o.png", PILImage.fromarray(arr), exif=exif.tobytes())
    img = read_image(src)
    with PILImage.open(src) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil))
    np.testing.assert_array_equal(_ints(img.pixels, 8), _chw(expected))


def test_stale_orientation_is_reset_on_write(tmp_path):
    exif = PILImage.Exif()
    exif[0x0112] = 8
    img = Image(np.zeros((3, H, W), np.float32), None, 8, None, "RGB", None, exif.tobytes())
    out = write_image(tmp_path / "o.jpg", img)
    with PILImage.open(out) as written:
        assert written.getexif()[0x0112] == 1


def test_16bit_orientation_applied(tmp_path):
    arr = _samples((6, 10, 3), 16)
    exif = PILImage.Exif()
    exif[0x0112] = 8
    raw = exif.tobytes()[6:]
    blob = _reference_png16(arr)
    blob = blob[:-12] + _png_chunk(b"eXIf", raw) + blob[-12:]  # before IEND
    src = tmp_path / "o16.png"
    src.write_bytes(blob)
    img = read_image(src)
    np.testing.assert_array_equal(_ints(img.pixels, 16), _chw(np.rot90(arr, 1)))


# --------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------


def _valid_png(path: Path, size=(64, 64)) -> Path:
    return _save_pil(path, PILImage.fromarray(_samples((*size, 3), 8)))


def _valid_jpeg(path: Path) -> Path:
    return _save_pil(path, PILImage.fromarray(_samples((64, 64, 3), 8)), quality=95)


def _bomb_png(path: Path, width: int, height: int) -> Path:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def _truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _corrupt_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: _make_dir(d / "folder.png"), "directory"),
        (lambda d: _write(d / "empty.png", b""), "empty file"),
        (lambda d: _truncate(_valid_png(d / "cut.png"), 0.6), "truncated"),
        (lambda d: _truncate(_valid_jpeg(d / "cut.jpg"), 0.6), "truncated"),
        (lambda d: _truncate(_valid_png(d / "cut_hdr.png"), 0.02), ""),
        (lambda d: _corrupt_middle(_valid_png(d / "bad_idat.png")), ""),
        (lambda d: _write(d / "noise.png", _rng(1).bytes(3000)), "not an image"),
        (lambda d: _write(d / "text.jpg", b"hello, not a picture\n"), "not an image"),
    ],
    ids=[
        "missing", "directory", "empty", "truncated-png", "truncated-jpeg", "cut-header",
        "corrupt-idat", "noise", "text",
    ],
)
def test_bad_files_raise_one_line_image_read_error(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    message = _assert_one_line_error(err, path)
    assert reason in message
    assert err.value.path == str(path)


def test_truncation_detected_even_if_pillow_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = _truncate(_valid_png(tmp_path / "cut.png"), 0.6)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_decompression_bomb_refused_from_header(tmp_path, monkeypatch):
    monkeypatch.delenv("IRC_MAX_PIXELS", raising=False)
    path = _bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    message = _assert_one_line_error(err, path)
    assert (
        "image too large: 100000 x 100000 = 10000000000 pixels exceeds the limit of "
        f"{MAX_PIXELS_DEFAULT} (set IRC_MAX_PIXELS to raise it)"
    ) in message


def test_pixel_limit_explicit_env_and_none(tmp_path, monkeypatch):
    monkeypatch.delenv("IRC_MAX_PIXELS", raising=False)
    path = _valid_png(tmp_path / "small.png", size=(20, 30))
    with pytest.raises(ImageReadError, match=r"20 = 600 pixels exceeds the limit of 599$") as err:
        read_image(path, max_pixels=599)
    assert "IRC_MAX_PIXELS" not in str(err.value)  # the env var does not apply to explicit limits
    assert read_image(path, max_pixels=600).pixels.shape == (3, 20, 30)

    monkeypatch.setenv("IRC_MAX_PIXELS", "599")
    with pytest.raises(ImageReadError, match="limit of 599 .set IRC_MAX_PIXELS"):
        read_image(path)
    assert read_image(path, max_pixels=600).width == 30  # explicit wins over env
    assert read_image(path, max_pixels=None).width == 30

    monkeypatch.setenv("IRC_MAX_PIXELS", "many")
    with pytest.raises(UsageError, match="IRC_MAX_PIXELS"):
        read_image(path)
    with pytest.raises(UsageError, match="max_pixels"):
        read_image(path, max_pixels=0)


def test_env_limit_zero_means_no_limit(tmp_path, monkeypatch):
    path = _valid_png(tmp_path / "small.png", size=(20, 30))
    monkeypatch.setenv("IRC_MAX_PIXELS", "0")
    assert read_image(path).width == 30
    monkeypatch.setenv("IRC_MAX_PIXELS", "100")
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path)


def test_pillow_bomb_limit_does_not_preempt_ours(tmp_path, monkeypatch):
    # Pillow's own (global) limit must neither refuse images within ours nor be left changed.
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    for path in (_valid_png(tmp_path / "a.png"), tmp_path / "b.tif"):
        if path.suffix == ".tif":
            _save_pil(path, PILImage.fromarray(_samples((64, 64), 8)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert read_image(path).width == 64
    assert PILImage.MAX_IMAGE_PIXELS == 100


# --------------------------------------------------------------------------------------------
# writing: atomicity, folders, suffixes
# --------------------------------------------------------------------------------------------


def _small_image(channels: int = 3, depth: int = 8) -> Image:
    return Image(_rng().random((channels, 8, 12), dtype=np.float32), None, depth, None, "RGB", None)


def test_write_creates_folders_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    result = write_image(str(target), _small_image())
    assert result == target and isinstance(result, Path)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]
    write_image(target, _small_image(depth=16))  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_written_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = write_image(tmp_path / "perm.png", _small_image())
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("depth", [8, 16])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, depth):
    def boom(*args, **kwargs):
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(PILImage.Image, "save", boom)
    monkeypatch.setattr(irc_io, "_encode_png16", boom)
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError, match="exploded"):
        write_image(target, _small_image(depth=depth))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_target(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IrcError) as err:
        write_image(target, _small_image())
    assert "No space left" in str(err.value) and "out.png" in str(err.value)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_unknown_suffix_is_usage_error(tmp_path):
    for name in ("out.gif", "out"):
        with pytest.raises(UsageError) as err:
            write_image(tmp_path / name, _small_image())
        assert all(suffix in str(err.value) for suffix in SUPPORTED_SUFFIXES)
    assert list(tmp_path.iterdir()) == []


def test_bad_write_arguments(tmp_path):
    with pytest.raises(UsageError, match="quality"):
        write_image(tmp_path / "q.jpg", _small_image(), quality=0)
    with pytest.raises(UsageError, match="bit_depth"):
        write_image(tmp_path / "q.png", _small_image(), bit_depth=12)
    target = tmp_path / "dir.png"
    target.mkdir()
    with pytest.raises(IrcError, match="directory"):
        write_image(target, _small_image())


def test_upper_case_suffix(tmp_path):
    out = write_image(tmp_path / "OUT.JPEG", _small_image())
    assert read_image(out).format == "JPEG"


def test_is_image_path():
    for name in ("a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF", "f.bmp", "g.webp", "dir/h.Png"):
        assert is_image_path(name), name
        assert is_image_path(Path(name)), name
    for name in ("a.gif", "b.txt", "png", "c.png.tmp", ".hidden.png.1234.tmp"):
        assert not is_image_path(name), name
    assert set(SUPPORTED_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def test_io_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, irc.io; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------------------------
# real files from the data pack
# --------------------------------------------------------------------------------------------

needs_data = pytest.mark.skipif(
    not (DATA_ROOT / "Set11").is_dir(),
    reason=f"data pack not found at {DATA_ROOT} (set IRC_DATA_ROOT to run these)",
)


@needs_data
@pytest.mark.parametrize("name", ["Parrots.tif", "foreman.tif"])
def test_grey_palette_tiffs_from_set11_read_as_grey(name):
    path = DATA_ROOT / "Set11" / name
    img = read_image(path)
    assert img.source_mode == "P" and img.channels == 1 and img.format == "TIFF"
    with PILImage.open(path) as pil:
        expected = np.asarray(pil.convert("L"))
    np.testing.assert_array_equal(_ints(img.pixels, 8), expected[None])


@needs_data
def test_grey_tiff_from_set11_round_trips(tmp_path):
    img = read_image(DATA_ROOT / "Set11" / "cameraman.tif")
    assert img.source_mode == "L" and img.pixels.shape == (1, 256, 256)
    again = read_image(write_image(tmp_path / "c.png", img))
    np.testing.assert_array_equal(again.pixels, img.pixels)


def test_alpha_is_composited_onto_white_when_the_format_cannot_hold_it(tmp_path):
    pixels = np.zeros((3, 4, 4), np.float32)
    pixels[0] = 1.0  # red everywhere ...
    alpha = np.ones((1, 4, 4), np.float32)
    alpha[:, :, :2] = 0.0  # ... but the left half fully transparent
    img = Image(pixels, alpha, 8, None, "RGBA", "PNG")
    with pytest.warns(UserWarning, match="alpha composited onto white"):
        out = read_image(write_image(tmp_path / "flat.bmp", img))
    assert np.allclose(out.pixels[:, :, :2], 1.0)  # white where it was transparent
    assert np.allclose(out.pixels[:, :, 2:], pixels[:, :, 2:])  # opaque red unchanged
