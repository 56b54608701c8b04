"""Images people send: read within limits, recognised by their bytes, decoded upright to RGB, or refused in words."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from storage.errors import EaselError


class BadImageError(EaselError):
    """An uploaded file is not an image we can use."""


# Decoded by Pillow itself (no external program such as Ghostscript for EPS), and all a phone or a
# browser produces once HEIC is exported. Pillow's names; MPO (a phone JPEG with a second picture
# inside) comes through the JPEG opener.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP"}
ACCEPTED = "accepted formats are PNG, JPEG, WebP, GIF and BMP"
NOT_AN_IMAGE = f"the attached file is not an image; {ACCEPTED}"
# Decoded, 64 MP is 192 MB of RGB; it lets a full-resolution 48/50 MP phone photo through and stays
# under Pillow's own decompression-bomb warning (89 MP).
MAX_UPLOAD_PIXELS = 64_000_000
def read_image_file(path: Path, max_bytes: int, option: str = "--image") -> bytes:
    """The bytes of the console's `--image PATH` (or `--video PATH`): a regular file of at most max_bytes, or a
    plain refusal."""
    # Runs in a worker thread, so it must never wait forever: a FIFO opened for reading blocks until a
    # writer appears (O_NONBLOCK returns at once), and /dev/zero or /dev/urandom never end. stat first so a
    # device is refused without being opened at all (some act on open: a tape drive rewinds); fstat the
    # descriptor too, as the name may be swapped between the two.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            _check_regular(path, info.st_mode)
            if info.st_size > max_bytes:
                raise BadImageError(f"{option} {path} {_too_big(info.st_size, max_bytes)}")
            with contextlib.suppress(OSError, AttributeError):
                os.set_blocking(fd, True)  # meaningless for a regular file; avoids a stray EAGAIN
            data = _read_at_most(fd, max_bytes + 1)  # one byte more: the file may have grown since fstat
        finally:
            os.close(fd)
    except OSError as exc:
        raise BadImageError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        limit = _size(max_bytes)
        raise BadImageError(f"{option} {path} is larger than the limit of {limit} (it grew while it was read)")
    return data


def _check_regular(path: Path, mode: int) -> None:
    kind = _file_kind(mode)
    if kind is not None:
        raise BadImageError(f"--image {path} is {kind}, not a file")


def _file_kind(mode: int) -> str | None:
    # None for a regular file; otherwise what it is, in words.
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def open_upload(
    data: bytes, max_bytes: int, max_pixels: int = MAX_UPLOAD_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode an uploaded image to RGB upright, at most max_side on a side, or say plainly why it cannot be used."""
    if len(data) > max_bytes:
        raise BadImageError(f"the image {_too_big(len(data), max_bytes)}")
    try:
        # Only the formats we name: Image.open would otherwise try every plugin, and EPS runs Ghostscript.
        # Lazy: reads the header, so the size is known before decoding.
        image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError
        accepted = _accepted_format(data)
        if accepted is not None:  # the right magic, but the header does not parse
            raise BadImageError(f"the attached {accepted} image is damaged or cut short") from exc
        other = _other_format(data)
        raise BadImageError(f"the attached file is {other}; {ACCEPTED}" if other else NOT_AN_IMAGE) from exc
    name = _FORMAT_NAMES.get(image.format or "", image.format or "image")
    width, height = image.size
    if width * height > max_pixels:
        # A small file can declare a huge canvas (a "decompression bomb"): refuse before allocating it.
        raise BadImageError(f"the image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    try:
        if max_side is not None:
            image.draft("RGB", (max_side, max_side))  # a big JPEG decodes at 1/2, 1/4 or 1/8 size, much quicker
        image.load()  # a GIF or WebP: its first frame
        if not _ends_properly(name, data):
            raise BadImageError(f"the attached {name} image is damaged or cut short")
        ImageOps.exif_transpose(image, in_place=True)  # phones store photos sideways plus an orientation tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"the attached {name} image is damaged or cut short") from exc
    image = to_rgb(image)
    if max_side is not None and max(image.size) > max_side:
        # The engine resizes to the job's size anyway; a smaller input is quicker to store and to load.
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


# What Pillow's openers and decoders raise on malformed input (an unknown file is an UnidentifiedImageError,
# itself an OSError; a cut-short stream "image file is truncated", an OSError too).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def _bomb(max_pixels: int) -> BadImageError:
    # Sizes far over Pillow's own limit are refused inside Image.open, before we learn the size (a
    # warning, not an error, between 1x and 2x its limit: raised only where warnings are made errors).
    return BadImageError(
        f"the image is over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is {max_pixels:,} pixels"
    )


def _accepted_format(data: bytes) -> str | None:
    # The accepted format these bytes claim to be, from their signature alone.
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    # "BM" alone starts plenty of text files; the next header's own size makes it a bitmap.
    if data[:2] == b"BM" and data[14:18] in {size.to_bytes(4, "little") for size in (12, 16, 40, 52, 56, 64, 108, 124)}:
        return "BMP"
    return None


# ISO base media "ftyp" brands of still images (HEIC is what iPhones take by default).
_HEIF_BRANDS = {
    b"heic": "a HEIC image", b"heix": "a HEIC image", b"heim": "a HEIC image", b"heis": "a HEIC image",
    b"hevc": "a HEIC image", b"hevx": "a HEIC image", b"mif1": "a HEIF image", b"msf1": "a HEIF image",
    b"avif": "an AVIF image", b"avis": "an AVIF image",
}


def _other_format(data: bytes) -> str | None:
    # What a file we refuse is, from its first bytes only: it is never handed to a decoder to find out.
    head = data[:1024]
    if head.startswith(b"\xc5\xd0\xd3\xc6") or (head.startswith(b"%!PS") and b"EPSF" in head.split(b"\n", 1)[0]):
        return "an EPS image"
    if head.startswith(b"%!PS"):
        return "a PostScript file"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "a TIFF image"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[head[8:12]]
    if head.startswith((b"\xff\x0a", b"\0\0\0\x0cJXL \r\n\x87\n")):
        return "a JPEG XL image"
    if head.startswith((b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "a JPEG 2000 image"
    if head.startswith(b"8BPS"):
        return "a Photoshop document"
    if head[:4] in (b"\0\0\1\0", b"\0\0\2\0"):
        return "an icon (ICO)"
    if head[:4] == b"qoif":
        return "a QOI image"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")) and b"<svg" in text:
        return "an SVG drawing"
    return None


def _ends_properly(name: str, data: bytes) -> bool:
    # Pillow refuses a cut-short PNG or JPEG only while ImageFile.LOAD_TRUNCATED_IMAGES is False, a
    # process-wide switch any library may flip; for the two commonest formats we check the end ourselves.
    if name == "PNG":
        return _png_has_iend(data)
    if name == "JPEG":
        return _jpeg_has_eoi(data)
    return True


def _png_has_iend(data: bytes) -> bool:
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IEND":
            return True
        at += 12 + length
    return False


def _jpeg_has_eoi(data: bytes) -> bool:
    # Walk the marker segments to the first scan (skipping over embedded thumbnails by their lengths),
    # then look for End Of Image: entropy-coded data never holds FF D9 (a data FF is stuffed as FF 00).
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return True  # not a structure we follow; Pillow has read it, so let it be
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            at += 2
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", at) != -1
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return False


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPARENT = ("RGBA", "LA", "PA", "La", "RGBa")


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any mode as 8-bit RGB: 16-bit grey scaled, not clipped; transparency laid on white."""
    # Pillow's own convert("RGB") clips a 16-bit grey value to 255 (a 16-bit grey PNG, which Pillow opens
    # as "I;16", comes out nearly white) and drops an alpha channel, so hidden pixels (often black) show.
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        values = np.asarray(image)
        if image.mode == "F":  # Pillow's float images are 0-255 levels; no decoder we accept makes them
            grey = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        else:
            grey = ((np.clip(values, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)
        rgb = Image.fromarray(grey, "L").convert("RGB")
        transparent = image.info.get("transparency")  # a PNG's tRNS: one grey value that is see-through
        if not isinstance(transparent, int):
            return rgb
        mask = Image.fromarray(np.where(values == transparent, 255, 0).astype(np.uint8), "L")
        white = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(white, mask=mask)
        return rgb
    if image.mode in _TRANSPARENT or "transparency" in image.info:
        if image.mode == "La":
            image = image.convert("LA")  # Pillow has no La → RGBA step
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    # 1, L, P, CMYK (a JPEG's Adobe-inverted CMYK is already undone by the decoder), YCbCr, RGB...
    return image.convert("RGB")


def _too_big(count: int, limit: int) -> str:
    # "is 10.5 MB; the limit is 10.0 MB", in bytes where rounding would print the two the same.
    size, most = _size(count), _size(limit)
    if size == most:
        size, most = f"{count:,} bytes", f"{limit:,} bytes"
    return f"is {size}; the limit is {most}"


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"
