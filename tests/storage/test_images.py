"""PNG files: A1111 infotext in outputs, content-addressed inputs, and plain words for bad uploads."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.images import ImageStore, _create_new, png_bytes
from storage.infotext import SAMPLER_NAMES, infotext, read_parameters
from storage.uploads import BadImageError, MAX_UPLOAD_PIXELS, NOT_AN_IMAGE, open_upload, read_image_file, to_rgb
from storage.records import RunInfo
from tests.conftest import params
from tests.helpers import blank_png


def run_info(model: str, model_hash: str | None = None) -> RunInfo:
    return RunInfo(
        model=model, model_hash=model_hash, memory_profile="speed", attention="sdpa", dtype="float16",
        device="cuda", diffusers_version="0.42.1", torch_version="2.13.0",
    )


def jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def noise(width: int = 96, height: int = 64) -> Image.Image:
    """Busy pixels, so an encoded file is large enough to cut in half."""
    return Image.fromarray(np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def gradient(width: int = 48, height: int = 32, shift: int = 0) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    array = np.stack([np.tile(x, (height, 1)), np.full((height, width), 100 + shift, np.uint8),
                      np.tile(x[::-1], (height, 1))], axis=-1)
    return Image.fromarray(array, "RGB")


def test_every_scheduler_has_an_a1111_sampler_name() -> None:
    assert set(SCHEDULERS) <= set(SAMPLER_NAMES)


# ---- outputs --------------------------------------------------------------------------------

def test_save_output_writes_a_png_with_its_parameters_chunk(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "data")
    image = gradient(64, 64)
    text = infotext(params(seed=9), 9, run_info("/m/tiny"))
    path = store.save_output(17, 1, image, text)

    assert path.name == "17-1.png"
    assert path.parent.parent == store.outputs and len(path.parent.name) == len("2025-01-31")
    assert read_parameters(path) == text
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (64, 64)
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))
    assert [p.name for p in path.parent.iterdir()] == ["17-1.png"]  # no .tmp left behind


def test_read_parameters_of_a_png_without_infotext_is_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    gradient().save(path)
    assert read_parameters(path) is None


# ---- uploads --------------------------------------------------------------------------------

def test_open_upload_decodes_to_rgb() -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 128))
    image = open_upload(png_bytes(rgba), max_bytes=1_000_000)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert image.getpixel((5, 5)) == (255, 127, 127)  # half see-through red, laid on white


def test_open_upload_reads_jpeg() -> None:
    buffer = io.BytesIO()
    gradient().save(buffer, format="JPEG")
    assert open_upload(buffer.getvalue(), max_bytes=1_000_000).size == (48, 32)


def test_open_upload_rejects_a_text_file_plainly() -> None:
    with pytest.raises(BadImageError) as caught:
        open_upload(b"hello, this is a shopping list\nmilk\neggs\n", max_bytes=1_000_000)
    assert str(caught.value) == "the attached file is not an image; accepted formats are PNG, JPEG, WebP, GIF and BMP"
    assert str(caught.value) == NOT_AN_IMAGE
    assert isinstance(caught.value, EaselError)
    # Starting with "BM" does not make a text a bitmap.
    with pytest.raises(BadImageError, match=f"^{NOT_AN_IMAGE}$"):
        open_upload(b"BMW service every 15,000 km\n" * 4, max_bytes=1_000_000)
    with pytest.raises(BadImageError, match=f"^{NOT_AN_IMAGE}$"):
        open_upload(b"", max_bytes=1_000_000)


@pytest.mark.parametrize(("format", "name"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP"), ("GIF", "GIF"),
                                              ("BMP", "BMP")])
@pytest.mark.parametrize("keep", [0.5, 0.9, 40])
def test_open_upload_says_a_cut_short_image_is_damaged(format: str, name: str, keep: float) -> None:
    # Cut in the pixel data (the header opens, decoding fails) or inside the header itself.
    data = encoded(noise(), format)
    cut = data[: int(len(data) * keep)] if keep < 1 else data[: int(keep)]
    with pytest.raises(BadImageError) as caught:
        open_upload(cut, max_bytes=1_000_000)
    assert str(caught.value) == f"the attached {name} image is damaged or cut short"


def test_a_cut_short_png_or_jpeg_is_refused_even_where_pillow_is_told_to_load_truncated_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Some libraries set this process-wide switch on import; Pillow then fills the missing rows with grey.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for format, name in (("PNG", "PNG"), ("JPEG", "JPEG")):
        data = encoded(noise(), format)
        with pytest.raises(BadImageError, match=f"^the attached {name} image is damaged or cut short$"):
            open_upload(data[: len(data) // 2], max_bytes=1_000_000)
        assert open_upload(data, max_bytes=1_000_000).size == (96, 64)
    # A PNG whose pixels are all there but whose IEND is missing is cut short too.
    data = encoded(noise(), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(BadImageError, match="PNG image is damaged or cut short"):
        open_upload(data[:-12], max_bytes=1_000_000)


def test_open_upload_names_a_refused_format_from_its_first_bytes() -> None:
    picture = Image.new("RGB", (16, 16), (10, 120, 200))
    accepted = "accepted formats are PNG, JPEG, WebP, GIF and BMP"
    cases = [
        (encoded(picture, "EPS"), "an EPS image"),  # opening it would run Ghostscript
        (b"%!PS-Adobe-3.0\n/Helvetica findfont 12 scalefont setfont\n", "a PostScript file"),
        (encoded(picture, "PDF"), "a PDF document"),
        (encoded(picture, "TIFF"), "a TIFF image"),  # Pillow reads TIFF; we do not ask it to
        (encoded(picture, "ICO"), "an icon (ICO)"),
        (encoded(picture, "QOI"), "a QOI image"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "a HEIC image"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 64, "an AVIF image"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', "an SVG drawing"),
        (b"8BPS\0\1" + b"\0" * 64, "a Photoshop document"),
    ]
    for data, what in cases:
        with pytest.raises(BadImageError) as caught:
            open_upload(data, max_bytes=1_000_000)
        assert str(caught.value) == f"the attached file is {what}; {accepted}"


def test_open_upload_takes_gif_bmp_webp_and_a_phone_mpo() -> None:
    red, blue = Image.new("RGB", (24, 16), (255, 0, 0)), Image.new("RGB", (24, 16), (0, 0, 255))
    animated = encoded(red, "GIF", save_all=True, append_images=[blue], duration=100)
    assert pixels(open_upload(animated, max_bytes=1_000_000))[8, 12].tolist() == [255, 0, 0]  # the first frame
    assert pixels(open_upload(encoded(red, "BMP"), max_bytes=1_000_000))[8, 12].tolist() == [255, 0, 0]
    assert pixels(open_upload(encoded(red, "WEBP", lossless=True), max_bytes=1_000_000))[8, 12].tolist() == [255, 0, 0]
    # Many phones write MPO: a JPEG with a second picture after it. Pillow opens it as a JPEG.
    mpo = encoded(red, "MPO", save_all=True, append_images=[blue])
    with Image.open(io.BytesIO(mpo)) as check:
        assert check.format == "MPO"
    assert pixels(open_upload(mpo, max_bytes=1_000_000))[8, 12, 0] > 240


# ---- every mode to RGB ----------------------------------------------------------------------

def sixteen_bit_ramp(width: int = 256, height: int = 4) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped() -> None:
    ramp = sixteen_bit_ramp()
    data = encoded(Image.fromarray(ramp), "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "I;16"  # how Pillow opens it; its convert("RGB") would clip at 255: nearly all white
        assert np.asarray(check.convert("RGB"))[0, 1:, 0].min() == 255
    image = open_upload(data, max_bytes=1_000_000)
    got = pixels(image)
    assert np.abs(got[:, :, 0] - ramp / 257).max() <= 0.5 + 1e-9
    assert (got[:, :, 0] == got[:, :, 1]).all() and (got[:, :, 1] == got[:, :, 2]).all()
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255 and got[0, 128, 0] in (128, 129)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "=u2"])
def test_to_rgb_scales_every_16_bit_layout(dtype: str) -> None:
    ramp = sixteen_bit_ramp(64).astype(dtype)
    image = Image.fromarray(ramp)
    assert image.mode in ("I;16", "I;16B", "I;16L")
    assert np.abs(pixels(to_rgb(image))[:, :, 1] - ramp.astype(float) / 257).max() <= 0.5 + 1e-9


def test_to_rgb_scales_a_32_bit_integer_image_holding_16_bit_values() -> None:
    # Older Pillow opened 16-bit grey PNGs as "I".
    ramp = sixteen_bit_ramp(64).astype(np.int32)
    image = Image.fromarray(ramp, "I")
    assert np.abs(pixels(to_rgb(image))[:, :, 0] - ramp / 257).max() <= 0.5 + 1e-9


def test_a_16_bit_grey_png_with_a_transparent_value_shows_white_there() -> None:
    values = np.array([[0, 1000, 65535, 1000]], np.uint16)
    data = encoded(Image.fromarray(values), "PNG", transparency=1000)
    assert pixels(open_upload(data, max_bytes=1_000_000))[0, :, 0].tolist() == [0, 255, 255, 255]
    values[0, 3] = 0
    data = encoded(Image.fromarray(values), "PNG", transparency=1000)
    assert pixels(open_upload(data, max_bytes=1_000_000))[0, :, 0].tolist() == [0, 255, 255, 0]


def test_a_16_bit_png_is_turned_upright_too() -> None:
    sideways = np.zeros((32, 48), np.uint16)
    sideways[:, :24] = 65535  # the left half is white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view: the left half goes on top
    image = open_upload(encoded(Image.fromarray(sideways), "PNG", exif=exif), max_bytes=1_000_000)
    assert image.size == (32, 48)
    got = pixels(image)
    assert got[5, 16].tolist() == [255, 255, 255] and got[40, 16].tolist() == [0, 0, 0]


def palette_image() -> Image.Image:
    image = Image.new("P", (8, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.paste(1, (4, 0, 8, 4))  # right half: index 1 (blue)
    return image


def test_a_palette_png_becomes_its_colours() -> None:
    got = pixels(open_upload(encoded(palette_image(), "PNG"), max_bytes=1_000_000))
    assert got[1, 1].tolist() == [255, 0, 0] and got[1, 6].tolist() == [0, 0, 255]


def test_a_palette_png_with_a_transparent_index_shows_white_there() -> None:
    data = encoded(palette_image(), "PNG", transparency=1)
    got = pixels(open_upload(data, max_bytes=1_000_000))
    assert got[1, 1].tolist() == [255, 0, 0] and got[1, 6].tolist() == [255, 255, 255]


def test_a_transparent_gif_shows_white_where_it_is_clear() -> None:
    data = encoded(palette_image(), "GIF", transparency=1)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "P" and check.info["transparency"] == 1
    got = pixels(open_upload(data, max_bytes=1_000_000))
    assert got[1, 1].tolist() == [255, 0, 0] and got[1, 6].tolist() == [255, 255, 255]


def test_grey_with_alpha_is_laid_on_white() -> None:
    image = Image.new("LA", (4, 4), (0, 255))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (0, 128))
    got = pixels(open_upload(encoded(image, "PNG"), max_bytes=1_000_000))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [127, 127, 127]
    assert got[3, 3].tolist() == [0, 0, 0]


def test_rgba_is_laid_on_white_not_black() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (255, 0, 0, 0))  # clear: whatever colour it hides must not show
    image.putpixel((1, 0), (0, 0, 255, 128))
    got = pixels(open_upload(encoded(image, "PNG"), max_bytes=1_000_000))
    assert got[0, 0].tolist() == [255, 255, 255]
    assert got[0, 1].tolist() == [127, 127, 255]
    assert got[2, 2].tolist() == [255, 0, 0]
    # A lossless WebP stores clear pixels as black; on white they still vanish.
    webp = encoded(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "WEBP", lossless=True)
    assert pixels(open_upload(webp, max_bytes=1_000_000))[2, 2].tolist() == [255, 255, 255]


def test_an_rgb_png_with_a_transparent_colour_shows_white_there() -> None:
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    image.putpixel((0, 0), (200, 0, 0))
    got = pixels(open_upload(encoded(image, "PNG", transparency=(10, 20, 30)), max_bytes=1_000_000))
    assert got[0, 0].tolist() == [200, 0, 0] and got[2, 2].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["PA", "La", "RGBa"])
def test_modes_no_decoder_makes_are_laid_on_white_too(mode: str) -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    image = rgba.convert("LA").convert("La") if mode == "La" else rgba.convert(mode)
    got = pixels(to_rgb(image))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [127, 127, 127]
    assert got[3, 3].tolist() == [0, 0, 0]


def test_a_cmyk_jpeg_becomes_its_rgb_colours() -> None:
    # Pillow writes (and reads back) Adobe-style inverted CMYK; the decoder undoes the inversion.
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    image.paste((255, 0, 0, 0), (8, 0, 16, 16))  # cyan
    data = encoded(image, "JPEG", quality=95)
    assert b"Adobe" in data
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "CMYK"
    got = pixels(open_upload(data, max_bytes=1_000_000))
    assert np.abs(got[8, 3] - [255, 0, 0]).max() <= 3
    assert np.abs(got[8, 12] - [0, 255, 255]).max() <= 3
    # A big CMYK JPEG with max_side still decodes at a smaller scale, to RGB.
    big = encoded(Image.new("CMYK", (1200, 800), (0, 255, 255, 0)), "JPEG")
    shrunk = open_upload(big, max_bytes=10_000_000, max_side=300)
    assert shrunk.size == (300, 200) and np.abs(pixels(shrunk)[100, 150] - [255, 0, 0]).max() <= 3


def test_a_black_and_white_image_becomes_black_and_white_rgb() -> None:
    image = Image.new("1", (8, 4), 0)
    image.paste(1, (4, 0, 8, 4))
    for format in ("PNG", "BMP"):
        got = pixels(open_upload(encoded(image, format), max_bytes=1_000_000))
        assert got[1, 1].tolist() == [0, 0, 0] and got[1, 6].tolist() == [255, 255, 255]


def test_a_grey_jpeg_becomes_grey_rgb() -> None:
    data = encoded(Image.new("L", (16, 16), 90), "JPEG", quality=95)
    got = pixels(open_upload(data, max_bytes=1_000_000))
    assert np.abs(got[8, 8] - 90).max() <= 2 and got[8, 8, 0] == got[8, 8, 1] == got[8, 8, 2]


def test_a_float_image_is_taken_as_0_to_255_levels_rounded_and_clipped() -> None:
    image = Image.fromarray(np.array([[-3.0, 0.6, 127.5, 254.4, 300.0, np.nan]], np.float32), "F")
    assert pixels(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 254, 255, 0]


# ---- the console's --image file -------------------------------------------------------------

def test_read_image_file_reads_a_file_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    data = png_bytes(gradient())
    path.write_bytes(data)
    assert read_image_file(path, max_bytes=len(data)) == data
    assert open_upload(read_image_file(path, max_bytes=len(data)), max_bytes=len(data)).size == (48, 32)
    with pytest.raises(BadImageError) as caught:
        read_image_file(path, max_bytes=len(data) - 1)
    assert str(caught.value) == f"--image {path} is {len(data):,} bytes; the limit is {len(data) - 1:,} bytes"


def test_read_image_file_says_the_size_in_mb_and_in_bytes_where_rounding_would_hide_it(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 2_500_000)
    with pytest.raises(BadImageError, match=f"^--image {path} is 2.5 MB; the limit is 2.0 MB$"):
        read_image_file(path, max_bytes=2_000_000)
    with pytest.raises(BadImageError, match=f"^--image {path} is 2,500,000 bytes; the limit is 2,499,999 bytes$"):
        read_image_file(path, max_bytes=2_499_999)


def test_read_image_file_that_is_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(BadImageError) as caught:
        read_image_file(tmp_path / "nope.png", max_bytes=1000)
    assert str(caught.value) == f"cannot read --image {tmp_path / 'nope.png'}: No such file or directory"
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(BadImageError, match=": Not a directory$"):
        read_image_file(tmp_path / "file" / "inside.png", max_bytes=1000)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_read_image_file_without_permission_says_so(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(BadImageError, match=f"^cannot read --image {path}: Permission denied$"):
        read_image_file(path, max_bytes=1000)


def refused_within_seconds(path: Path) -> str:
    # In a thread, as the console runs it: a blocking open or an endless read would hang the test otherwise.
    outcome: list[BaseException | bytes] = []
    worker = threading.Thread(target=lambda: outcome.append(_attempt(path)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), f"reading {path} blocked"
    [result] = outcome
    assert isinstance(result, BadImageError)
    return str(result)


def _attempt(path: Path) -> BaseException | bytes:
    try:
        return read_image_file(path, max_bytes=1000)
    except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
        return exc


def test_read_image_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    assert refused_within_seconds(tmp_path) == f"--image {tmp_path} is a directory, not a file"
    if Path("/dev/zero").exists():  # endless: reading it "up to the limit" would still be wrong
        assert refused_within_seconds(Path("/dev/zero")) == "--image /dev/zero is a character device, not a file"
    if hasattr(os, "mkfifo"):  # no writer: a plain open would wait forever
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        assert refused_within_seconds(fifo) == f"--image {fifo} is a named pipe (FIFO), not a file"
    if hasattr(socket, "AF_UNIX"):
        path = tmp_path / "s"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            assert refused_within_seconds(path) == f"--image {path} is a socket, not a file"


def test_read_image_file_follows_a_link_to_a_file(tmp_path: Path) -> None:
    (tmp_path / "real.png").write_bytes(b"png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    assert read_image_file(tmp_path / "link.png", max_bytes=3) == b"png"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_read_image_file_stops_one_byte_past_the_limit_when_the_size_lies() -> None:
    # /proc files say they are 0 bytes long and then give more: as a file growing while read does.
    path = Path("/proc/self/status")
    assert path.stat().st_size == 0 and len(path.read_bytes()) > 100
    with pytest.raises(BadImageError) as caught:
        read_image_file(path, max_bytes=10)
    assert str(caught.value) == (
        "--image /proc/self/status is larger than the limit of 10 bytes (it grew while it was read)"
    )


def test_open_upload_rejects_an_oversize_file_before_decoding_it() -> None:
    data = png_bytes(gradient()) + b"\0" * 2_500_000  # size is checked first, whatever the content
    with pytest.raises(BadImageError) as caught:
        open_upload(data, max_bytes=2_000_000)
    assert str(caught.value) == f"the image is {len(data) / 1e6:.1f} MB; the limit is 2.0 MB"
    assert "2.5 MB" in str(caught.value)


def test_open_upload_accepts_exactly_the_limit() -> None:
    data = png_bytes(gradient())
    assert open_upload(data, max_bytes=len(data)).size == (48, 32)


def test_open_upload_refuses_a_decompression_bomb_plainly() -> None:
    # 190 KB that would decode to 196 million pixels: Pillow refuses it from the header, and so do we.
    data = blank_png(14000, 14000)
    assert len(data) < 300_000
    with pytest.raises(BadImageError) as caught:
        open_upload(data, max_bytes=10_000_000)
    assert str(caught.value) == (
        f"the image is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit is {MAX_UPLOAD_PIXELS:,} pixels"
    )


def test_open_upload_checks_the_pixel_count_from_the_header_before_decoding() -> None:
    data = blank_png(9000, 8000)  # 72 MP: under Pillow's own limits, over ours
    with pytest.raises(BadImageError) as caught:
        open_upload(data, max_bytes=10_000_000)
    assert str(caught.value) == "the image is 9000x8000 pixels; the limit is 64,000,000 pixels"
    with pytest.raises(BadImageError, match="^the image is 300x200 pixels; the limit is 59,999 pixels$"):
        open_upload(blank_png(300, 200), max_bytes=10_000_000, max_pixels=59_999)
    assert open_upload(blank_png(300, 200), max_bytes=10_000_000, max_pixels=60_000).size == (300, 200)


def test_open_upload_turns_a_phone_photo_upright() -> None:
    # Stored sideways (landscape) with EXIF Orientation 6: "rotate 90° clockwise to view".
    sideways = Image.new("RGB", (96, 64), (0, 0, 255))
    sideways.paste((255, 0, 0), (0, 0, 48, 64))  # the left half is red
    exif = Image.Exif()
    exif[0x0112] = 6
    image = open_upload(jpeg_bytes(sideways, exif=exif), max_bytes=1_000_000)
    assert image.size == (64, 96)
    pixels = np.asarray(image).astype(int)
    assert pixels[10, 32, 0] > 200 and pixels[10, 32, 2] < 50  # the red half is now on top
    assert pixels[85, 32, 2] > 200 and pixels[85, 32, 0] < 50
    # Without the tag nothing turns.
    assert open_upload(jpeg_bytes(sideways), max_bytes=1_000_000).size == (96, 64)


@pytest.mark.parametrize(
    ("size", "max_side", "kept"),
    [
        ((3000, 1000), 1024, (1024, 341)),
        ((1000, 3000), 1024, (341, 1024)),
        ((1024, 700), 1024, (1024, 700)),  # already small enough: untouched
        ((2400, 1800), 512, (512, 384)),  # a JPEG this big decodes at half size first (Pillow's draft)
    ],
)
def test_open_upload_shrinks_to_max_side_keeping_the_aspect(size, max_side, kept) -> None:
    for data in (png_bytes(gradient(*size)), jpeg_bytes(gradient(*size))):
        image = open_upload(data, max_bytes=100_000_000, max_side=max_side)
        assert image.mode == "RGB" and image.size == kept
    # The picture is the same one, smaller: the gradient still runs left to right.
    row = np.asarray(open_upload(png_bytes(gradient(*size)), max_bytes=100_000_000, max_side=max_side))[0, :, 0]
    assert row[0] < 10 and row[-1] > 245


# ---- inputs ---------------------------------------------------------------------------------

def test_add_input_is_content_addressed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = store.add_input(gradient())[0]
    again = store.add_input(gradient())[0]
    other = store.add_input(gradient(shift=1))[0]

    assert first == again != other
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)
    assert sorted(p.name for p in store.inputs.iterdir()) == sorted({f"{first}.png", f"{other}.png"})
    assert hashlib.sha256(store.input_path(first).read_bytes()).hexdigest() == first


def test_load_input_gives_back_the_same_pixels(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    original = gradient()
    digest = store.add_input(original)[0]
    loaded = ImageStore(tmp_path).load_input(digest)  # a fresh store, as after a restart
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


def test_add_input_says_whether_it_wrote_the_file_and_discard_input_removes_it(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest, new = store.add_input(gradient())
    assert new and store.input_path(digest).is_file()
    assert store.add_input(gradient()) == (digest, False)
    store.discard_input(digest)
    assert not store.input_path(digest).exists()
    store.discard_input(digest)  # already gone: nothing to do


def test_concurrent_saves_of_the_same_image_all_succeed(tmp_path: Path) -> None:
    # Two people (or one person twice) send the same photo at once: both threads see no file and write it.
    store = ImageStore(tmp_path)
    expected = hashlib.sha256(png_bytes(gradient(256, 256))).hexdigest()
    threads, rounds = 8, 30
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []
    digests: set[str] = set()

    def saver(worker: int) -> None:
        image = gradient(256, 256)  # each upload decodes to its own Image (Pillow's save is not re-entrant)
        for _ in range(rounds):
            if barrier.wait() == 0:
                store.input_path(expected).unlink(missing_ok=True)
            barrier.wait()  # every thread starts the round with the file gone
            try:
                digests.add(store.add_input(image)[0])
                digests.add(str(store.save_output(1, 0, image, "same job, saved twice")))
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                failures.append(exc)

    workers = [threading.Thread(target=saver, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert expected in digests
    assert hashlib.sha256(store.input_path(expected).read_bytes()).hexdigest() == expected
    assert [p.name for p in store.inputs.iterdir()] == [f"{expected}.png"]  # no temporary files left
    # Every save of job 1's image 0 kept its own file: none replaced another.
    outputs = {Path(d) for d in digests if d != expected}
    assert len(outputs) == threads * rounds
    [folder] = {path.parent for path in outputs}
    assert {p.name for p in folder.iterdir()} == {"1-0.png"} | {f"1-0-{n}.png" for n in range(2, threads * rounds + 1)}
    assert all(read_parameters(path) == "same job, saved twice" for path in outputs)


def today_folders(store: ImageStore) -> set[Path]:
    # The day folder the next save uses (and the next day's, should the test straddle midnight UTC).
    now = datetime.now(timezone.utc)
    return {store.outputs / day.strftime("%Y-%m-%d") for day in (now, now + timedelta(minutes=1))}


def test_save_output_never_replaces_an_existing_file(tmp_path: Path) -> None:
    # The database was lost, job numbers start again at 1, and last year's (today's) 1-0.png is still there.
    store = ImageStore(tmp_path)
    for folder in today_folders(store):
        folder.mkdir(parents=True)
        (folder / "1-0.png").write_bytes(b"an old picture")
    path = store.save_output(1, 0, gradient(), "new")
    assert path.name == "1-0-2.png"
    assert (path.parent / "1-0.png").read_bytes() == b"an old picture"
    assert read_parameters(path) == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["1-0-2.png", "1-0.png"]  # no temporary file left


def test_two_saves_of_the_same_job_and_index_give_two_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = store.save_output(5, 2, gradient(), "first")
    second = store.save_output(5, 2, gradient(shift=3), "second")
    third = store.save_output(5, 2, gradient(shift=6), "third")
    assert [first.name, second.name, third.name] == ["5-2.png", "5-2-2.png", "5-2-3.png"]
    assert [read_parameters(p) for p in (first, second, third)] == ["first", "second", "third"]


def test_save_output_does_not_follow_a_link_at_its_name(tmp_path: Path) -> None:
    # A dangling link where the PNG would go must not make us write wherever it points.
    store = ImageStore(tmp_path / "data")
    for folder in today_folders(store):
        folder.mkdir(parents=True)
        (folder / "3-0.png").symlink_to(tmp_path / "elsewhere.png")
    path = store.save_output(3, 0, gradient(), "x")
    assert path.name == "3-0-2.png" and not (tmp_path / "elsewhere.png").exists()


def test_save_output_skips_a_folder_at_its_name(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    folder = store.save_output(1, 0, gradient(), "first").parent
    (folder / "2-0.png").mkdir()  # a folder where the PNG should go: left alone, the PNG goes next to it
    (folder / "2-0.png" / "keep").touch()
    assert store.save_output(2, 0, gradient(), "second").name == "2-0-2.png"
    assert sorted(p.name for p in folder.iterdir()) == ["1-0.png", "2-0-2.png", "2-0.png"]
    assert [p.name for p in (folder / "2-0.png").iterdir()] == ["keep"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    folder = store.save_output(1, 0, gradient(), "first").parent
    with pytest.raises(OSError, match="too long"):  # a name over the filesystem's 255 bytes: publishing fails
        store.save_output(2, 10**300, gradient(), "second")
    assert sorted(p.name for p in folder.iterdir()) == ["1-0.png"]


def test_add_input_keeps_the_file_already_there(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest, _ = store.add_input(gradient())
    before = store.input_path(digest).stat()
    assert store.add_input(gradient()) == (digest, False)
    after = store.input_path(digest).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten, not replaced


def test_the_fallback_without_hard_links_creates_only_new_files(tmp_path: Path) -> None:
    # Where os.link is not supported (FAT, some network mounts) files are created with O_EXCL instead.
    path = tmp_path / "1-0.png"
    _create_new(path, b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        _create_new(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["1-0.png"]


def test_load_input_that_is_gone_says_so(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest = store.add_input(gradient())[0]
    store.input_path(digest).unlink()
    with pytest.raises(EaselError, match=f"input image of this job \\({digest[:12]}\\) is no longer on disk"):
        store.load_input(digest)
