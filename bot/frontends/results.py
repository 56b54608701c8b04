"""Images to and from chat platforms: uploads checked and read under a hard cap, results fitted to their limits."""

from __future__ import annotations

import io
from pathlib import Path
from typing import AsyncIterable

from PIL import Image


def fitted(path: Path, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of a result within `limit` bytes: the PNG itself where it fits, else a JPEG of it,
    scaled down if need be. The PNG on disk, with its parameters, is never changed."""
    data = path.read_bytes()
    if len(data) <= limit:
        return path.name, data
    with Image.open(path) as picture:
        picture = picture.convert("RGB")
        for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.1):
            size = (max(1, int(picture.width * scale)), max(1, int(picture.height * scale)))
            buffer = io.BytesIO()
            picture.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=90)
            if buffer.tell() <= limit:
                break
    return path.with_suffix(".jpg").name, buffer.getvalue()


async def read_capped(chunks: AsyncIterable[bytes], declared: int | None, limit: int) -> bytes | None:
    """A download's bytes, or None as soon as it is known to pass `limit`: by the length it declared, before
    anything is read, else while it is read, whatever it declared. Past the limit nothing more is read."""
    if (declared or 0) > limit:
        return None
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def upload_problem(name: str, mime: str | None, size: int, limit: int, *, unknown: str, instead: str) -> str | None:
    """Why an upload is refused before anything of it is downloaded (its type, the size it declares), or None.
    `unknown` names a missing type; `instead` says what to send."""
    if not (mime or "").startswith("image/"):
        return f"{name} is not an image ({mime or unknown}); {instead}"
    if size > limit:
        return f"{name} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"
    return None


def over_limit(name: str, limit: int) -> str:
    """What to say of a download cut off at the limit, whatever size it had declared."""
    return f"{name} is over the {limit / 1e6:.1f} MB limit; send a smaller image"
