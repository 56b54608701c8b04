"""Running a loaded upscaling network on a picture, tile by tile so big pictures fit in memory."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from generation.engine import JobCancelled


class Upscaler:
    """A loaded ESRGAN-family network: `scale`, `architecture`, `name`, and `upscale(image)`."""

    def __init__(self, network: nn.Module, *, name: str, architecture: str, scale: int, channels: int = 3,
                 multiple: int = 1) -> None:
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.architecture = architecture
        self.scale = scale
        self.channels = channels
        # Input sides must be a multiple of this (the pixel-unshuffle factor); pictures are padded to it.
        self.multiple = multiple

    def __repr__(self) -> str:
        return (f"Upscaler({self.name!r}, {self.architecture} {self.scale}×, "
                f"{self.device.type} {str(self.dtype).removeprefix('torch.')})")

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The network's weight type (float16 only makes sense on CUDA; the caller decides)."""
        return next(self.network.parameters()).dtype

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Upscaler:
        """Move the network (in place) and return self."""
        self.network.to(device=device, dtype=dtype)
        return self

    @torch.inference_mode()
    def upscale(self, image: Image.Image, *, tile: int = 512, overlap: int = 32,
                cancelled: Callable[[], bool] | None = None,
                progress: Callable[[int, int], None] | None = None) -> Image.Image:
        """`image` enlarged `scale` times. The network sees patches of at most `tile` input pixels a side
        (0: the whole picture at once), each with `overlap` pixels of context on every inner side that are
        cropped away again, so seams do not show. `cancelled()` is asked before every tile (raising
        JobCancelled); `progress(done, total)` is told after each. Transparency is enlarged with Lanczos."""
        if tile < 0 or overlap < 0:
            raise ValueError(f"tile and overlap must be 0 or more, got tile={tile}, overlap={overlap}")
        step = self.multiple
        overlap = math.ceil(overlap / step) * step
        if tile and tile - 2 * overlap < step:
            raise ValueError(f"a {tile} px tile leaves nothing inside its two {overlap} px overlaps")

        mode = "RGB" if self.channels == 3 else "L"
        alpha = _alpha(image)
        pixels = np.array(image.convert(mode), dtype=np.uint8).reshape(image.height, image.width, -1)
        height, width = pixels.shape[:2]
        pad_y, pad_x = -height % step, -width % step
        if pad_y or pad_x:
            pixels = np.pad(pixels, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        rows = _spans(pixels.shape[0], tile, overlap, step)
        columns = _spans(pixels.shape[1], tile, overlap, step)

        scale, device, dtype = self.scale, self.device, self.dtype
        out: np.ndarray | None = None
        total, done = len(rows) * len(columns), 0
        for top, bottom in rows:
            for left, right in columns:
                if cancelled is not None and cancelled():
                    raise JobCancelled("cancelled while upscaling")
                # The patch is the tile plus its overlap, clipped to the picture.
                y0, y1 = max(0, top - overlap), min(pixels.shape[0], bottom + overlap)
                x0, x1 = max(0, left - overlap), min(pixels.shape[1], right + overlap)
                patch = torch.from_numpy(pixels[y0:y1, x0:x1]).permute(2, 0, 1)[None]
                result = self.network(patch.to(device).to(dtype).div_(255))[0]
                inner = result[:, (top - y0) * scale:(bottom - y0) * scale, (left - x0) * scale:(right - x0) * scale]
                inner = inner.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                if out is None:
                    out = np.empty((pixels.shape[0] * scale, pixels.shape[1] * scale, inner.shape[2]), np.uint8)
                out[top * scale:bottom * scale, left * scale:right * scale] = inner
                done += 1
                if progress is not None:
                    progress(done, total)

        assert out is not None  # every picture has at least one tile
        out = out[:height * scale, :width * scale]
        enlarged = Image.fromarray(out[..., 0] if out.shape[2] == 1 else out, "L" if out.shape[2] == 1 else "RGB")
        if alpha is not None:
            enlarged.putalpha(alpha.resize(enlarged.size, Image.Resampling.LANCZOS))
        return enlarged


def _alpha(image: Image.Image) -> Image.Image | None:
    """The picture's transparency as an L image, or None where it has none."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None


def _spans(length: int, tile: int, overlap: int, step: int) -> list[tuple[int, int]]:
    """Split 0..length (a multiple of step) into near-equal tiles whose inside plus overlaps fit in `tile`."""
    if not tile or length <= tile:
        return [(0, length)]
    count = math.ceil(length / (tile - 2 * overlap))
    edges = [round(k * length / count / step) * step for k in range(count + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
