"""What an animation does to a picture between two frames: the zoom loop's move, its colour coherence, and the
edges a ControlNet follows in a clip's frame. Plain image arithmetic (OpenCV, numpy), no model."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image


def moved(image: Image.Image, zoom: float = 1.0, rotate: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> Image.Image:
    """The picture as the next frame of a zoom loop starts from it: enlarged `zoom` times and turned `rotate`
    degrees (counter-clockwise) about its centre, then moved `shift` pixels (x right, y down); the same size,
    edges repeated where the move uncovers the border. Sampled with Lanczos (OpenCV's 8×8 kernel)."""
    width, height = image.size
    # Output pixel p shows the input at centre + R(−θ)·(p − centre − shift)/zoom: OpenCV's rotation matrix about
    # the centre at scale `zoom`, with the shift added after.
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), rotate, zoom)
    matrix[:, 2] += shift
    pixels = cv2.warpAffine(np.asarray(image.convert("RGB")), matrix, (width, height), flags=cv2.INTER_LANCZOS4,
                            borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(pixels)


def matched_colours(image: Image.Image, reference: Image.Image) -> Image.Image:
    """The picture with each channel's histogram in LAB matched to the reference's (Deforum's colour coherence:
    a zoom loop otherwise drifts in hue and contrast frame by frame)."""
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)
    target = cv2.cvtColor(np.asarray(reference.convert("RGB")), cv2.COLOR_RGB2LAB)
    out = np.empty_like(lab)
    for channel in range(3):
        out[..., channel] = _matched(lab[..., channel], target[..., channel])
    return Image.fromarray(cv2.cvtColor(out, cv2.COLOR_LAB2RGB))


def _matched(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One uint8 channel mapped so its distribution follows the reference's (quantile to quantile)."""
    counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    wanted = np.bincount(reference.ravel(), minlength=256).astype(np.float64)
    quantiles = np.cumsum(counts) / counts.sum()
    wanted_quantiles = np.cumsum(wanted) / wanted.sum()
    levels = np.interp(quantiles, wanted_quantiles, np.arange(256))
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)[values]


def edges(image: Image.Image) -> Image.Image:
    """White lines on black where the frame has edges (Canny, thresholds from the frame's median), thickened to
    the marker-like strokes the scribble ControlNet knows: what it follows to keep a clip's frames in place."""
    grey = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    median = float(np.median(grey))
    lines = cv2.Canny(grey, max(0, int(0.66 * median)), min(255, int(1.33 * median)) or 1)
    side = max(1, round(math.sqrt(image.width * image.height) / 256))
    lines = cv2.dilate(lines, np.ones((side + 1, side + 1), np.uint8))
    return Image.fromarray(lines).convert("RGB")
