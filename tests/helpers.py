"""Helpers shared by the test packages: polling for a condition without sleeping a fixed time, a recording
Progress for engines, pixels to compare, images to upload."""

from __future__ import annotations

import asyncio
import inspect
import struct
import zlib
from typing import Any, Awaitable, Callable

import numpy as np
from PIL import Image

TIMEOUT = 60.0  # generous: a 2-core CI runner under load is slow, and a passing test never waits this long


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float = TIMEOUT, what: str = "",
                     every: float = 0.01) -> Any:
    """Poll check() (plain or async) on the event loop until it returns something truthy, and return that.

    Fails the test, naming `what`, once `timeout` seconds pass; never loops for ever. The poll yields to
    the loop between tries, so the code under test runs in between.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or 'the condition'}")
        await asyncio.sleep(every)


class Recorder:
    """A real Progress: remembers every step, asks to cancel after `cancel_after` steps, and raises `fail`
    from step number `fail_at` (a frontend's callback that breaks mid-run)."""

    wants_preview = True

    def __init__(self, cancel_after: int | None = None, *, fail: BaseException | None = None,
                 fail_at: int = 1) -> None:
        self.steps: list[tuple[int, int]] = []
        self.previews: list[Image.Image | None] = []
        self.cancel_after = cancel_after
        self.fail, self.fail_at = fail, fail_at

    @property
    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after

    def step(self, done: int, total: int, preview: Image.Image | None) -> None:
        self.steps.append((done, total))
        self.previews.append(preview)
        if self.fail is not None and len(self.steps) == self.fail_at:
            raise self.fail


def pixels(image: Image.Image) -> np.ndarray:
    """The image as RGB numbers that may be subtracted without wrapping round."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


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
