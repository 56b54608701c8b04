"""Small WebP copies of result images for the gallery's grid, made once and kept in a cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
from pathlib import Path

from PIL import Image, ImageOps

QUALITY = 80
# Hashing a file means reading all of it; a grid page asks for dozens of thumbnails each time it is shown.
# (device, inode, size, mtime, ctime) → its sha256 spares the reading while the file is unchanged.
_DIGESTS: dict[tuple[int, ...], str] = {}
_MAX_DIGESTS = 100_000


def thumbnail(image: Path, cache: Path, side: int = 320) -> Path:
    """A WebP of `image` whose longer side is at most `side` (never enlarged), in `cache` under the sha256 of
    the image's bytes and the side: made on the first call, found on the next. Raises FileNotFoundError for a
    missing image and PIL.UnidentifiedImageError for a file that is no image."""
    if side < 1:
        raise ValueError(f"side must be at least 1, got {side}")
    image = Path(image)
    stat = image.stat()  # FileNotFoundError for a missing image
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    data = None
    digest = _DIGESTS.get(key)
    if digest is None:
        data = image.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(_DIGESTS) >= _MAX_DIGESTS:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    path = Path(cache) / f"{digest}-{side}.webp"
    if path.exists():
        return path
    if data is None:
        data = image.read_bytes()
    webp = _webp(data, side)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Another request may be making the same thumbnail at this moment: each writes a file of its own and
    # renames it into place, so a reader never sees half a file and the last rename wins with the same bytes.
    tmp = path.parent / f".{secrets.token_hex(8)}.tmp"
    try:
        tmp.write_bytes(webp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def _webp(data: bytes, side: int) -> bytes:
    """The image in `data`, shrunk to fit side×side, as WebP bytes."""
    with Image.open(io.BytesIO(data)) as opened:
        picture = ImageOps.exif_transpose(opened)  # a phone photo (an upload kept as a frame) stands upright
        alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
        picture = picture.convert("RGBA" if alpha else "RGB")
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)  # only ever shrinks
        buffer = io.BytesIO()
        picture.save(buffer, format="WEBP", quality=QUALITY, method=4)
    return buffer.getvalue()
