"""The cleaned strokes as each sketch model wants them: ControlNet scribble or pix2pix."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from generation.scribble.strokes import mask_at_work_scale


def control_size(width: int, height: int, area: int = 512 * 512) -> tuple[int, int]:
    """Multiples of 64 near `area` pixels with the aspect ratio of width×height (64-aligned sizes kept)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if area < 64 * 64:
        raise ValueError(f"area must be at least 64×64 = 4096 pixels, got {area}")
    # An already aligned size is the user's choice (e.g. 512×768), unless it is far beyond the area
    # the model is run at: a 64-aligned 12-MP photo must not go to the GPU at full size.
    if width % 64 == 0 and height % 64 == 0 and width * height <= 4 * area:
        return width, height
    scale = math.sqrt(area / (width * height))
    w, h = max(64, round(width * scale / 64) * 64), max(64, round(height * scale / 64) * 64)
    # A strip (say 2000×10) pins its short side at 64; keep the long side to the area then, and
    # let the padding take the rest of the aspect.
    if w == 64 and height > width:
        h = min(h, max(64, area // 64 // 64 * 64))
    elif h == 64 and width > height:
        w = min(w, max(64, area // 64 // 64 * 64))
    return w, h


def _fit(mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The mask as stroke coverage 0–1, scaled to fit inside size=(w, h) whole; and its offset there."""
    h, w = mask.shape
    scale = min(size[0] / w, size[1] / h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    # INTER_AREA turns a thin stroke into partial coverage instead of skipping it between samples.
    coverage = cv2.resize(mask.astype(np.float32), (fw, fh), interpolation=cv2.INTER_AREA)
    return coverage, ((size[0] - fw) // 2, (size[1] - fh) // 2)


def _padded(coverage: np.ndarray, offset: tuple[int, int], size: tuple[int, int], fill: float) -> np.ndarray:
    canvas = np.full((size[1], size[0]), fill, np.float32)
    x, y = offset
    canvas[y:y + coverage.shape[0], x:x + coverage.shape[1]] = coverage
    return canvas


def control_image(image: Image.Image, area: int = 512 * 512) -> Image.Image:
    """The ControlNet scribble condition: thick white strokes on black, RGB, 64-aligned, padded not cropped."""
    mask = mask_at_work_scale(image)
    size = control_size(*image.size, area=area)
    coverage, offset = _fit(mask, size)
    # Any coverage counts: a faint 1-px stroke shrunk 2× is a quarter pixel and must survive.
    lines = (coverage > 0.1).astype(np.uint8)
    # The scribble model was trained on thick, marker-like lines (~3–5 px at 512²); thin ones are
    # read as noise. Scale the thickening with the output so larger areas get the same look.
    # Thickened before padding, so the padding stays pure black.
    radius = max(1, round(math.sqrt(size[0] * size[1]) / 256))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    lines = _padded(cv2.dilate(lines, kernel).astype(np.float32), offset, size, 0.0).astype(np.uint8) * 255
    return Image.fromarray(np.dstack([lines] * 3), "RGB")


def pix2pix_input(image: Image.Image, size: int = 256) -> Image.Image:
    """Input for a pix2pix edges→photo model: thin dark lines on white, RGB, size×size, padded not cropped."""
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    mask = mask_at_work_scale(image)
    coverage, offset = _fit(mask, (size, size))
    # The edges2* sets use ~1-px black edges on white: keep pixels at least a fifth covered.
    lines = _padded(coverage, offset, (size, size), 0.0) > 0.2
    pixels = np.where(lines, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels] * 3), "RGB")

