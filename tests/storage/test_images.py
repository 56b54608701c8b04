"""PNG files: A1111 infotext in outputs, content-addressed inputs, and plain words for bad uploads."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.images import (
    MAX_UPLOAD_PIXELS,
    SAMPLER_NAMES,
    BadImageError,
    ImageStore,
    infotext,
    open_upload,
    read_parameters,
)
from storage.records import RunInfo
from tests.conftest import params


def run_info(model: str, model_hash: str | None = None) -> RunInfo:
    return RunInfo(
        model=model, model_hash=model_hash, memory_profile="speed", attention="sdpa", dtype="float16",
        device="cuda", diffusers_version="0.42.1", torch_version="2.13.0",
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A valid black-and-white PNG of any size, built row by row: a huge canvas in a small file."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then 1 bit a pixel
    packer = zlib.compressobj(9)
    rows_at_once = max(1, 4_000_000 // len(row))
    idat = b"".join(packer.compress(row * min(rows_at_once, height - top)) for top in range(0, height, rows_at_once))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat + packer.flush())
            + chunk(b"IEND", b""))


def jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


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


def test_open_upload_reads_jpeg() -> None:
    buffer = io.BytesIO()
    gradient().save(buffer, format="JPEG")
    assert open_upload(buffer.getvalue(), max_bytes=1_000_000).size == (48, 32)


def test_open_upload_rejects_a_text_file_plainly() -> None:
    with pytest.raises(BadImageError) as caught:
        open_upload(b"hello, this is a shopping list\nmilk\neggs\n", max_bytes=1_000_000)
    assert str(caught.value) == "the attached file is not an image (PNG, JPEG or WebP expected)"
    assert isinstance(caught.value, EaselError)


def test_open_upload_rejects_a_truncated_png() -> None:
    data = png_bytes(gradient(256, 256))
    with pytest.raises(BadImageError, match="not an image"):
        open_upload(data[: len(data) // 2], max_bytes=1_000_000)


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
    assert expected in digests and len(digests) == 2  # one input sha, one output path
    assert hashlib.sha256(store.input_path(expected).read_bytes()).hexdigest() == expected
    assert [p.name for p in store.inputs.iterdir()] == [f"{expected}.png"]  # no temporary files left
    [output] = [Path(d) for d in digests if d != expected]
    assert read_parameters(output) == "same job, saved twice"
    assert [p.name for p in output.parent.iterdir()] == ["1-0.png"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    folder = store.save_output(1, 0, gradient(), "first").parent
    (folder / "2-0.png").mkdir()  # a folder where the PNG should go: the final rename fails
    (folder / "2-0.png" / "keep").touch()
    with pytest.raises(OSError):
        store.save_output(2, 0, gradient(), "second")
    assert sorted(p.name for p in folder.iterdir()) == ["1-0.png", "2-0.png"]


def test_load_input_that_is_gone_says_so(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest = store.add_input(gradient())[0]
    store.input_path(digest).unlink()
    with pytest.raises(EaselError, match=f"input image of this job \\({digest[:12]}\\) is no longer on disk"):
        store.load_input(digest)
