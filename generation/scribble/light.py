"""The photo at working scale, in grey, with the paper's lighting and shadows divided out."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

# Long side the clean-up runs at. Pencil strokes in a phone photo of a page are several px wide at
# 12 MP, so ~1 px at this scale still holds them; the parameters below are tuned for this scale.
WORK_SIDE = 1024
# Background (paper + light) estimate: a closing wider than any stroke wipes the strokes off the
# page, then a blur smooths the closing's blocky steps. Computed at 1/4 of the working scale.
BACKGROUND_STEP = 4
BACKGROUND_KERNEL = 9  # at 1/4 scale: ~36 px at working scale, wider than the thickest stroke
# Where the paper's brightness jumps by STEP_RATIO within a few px (a hard shadow's edge, the sheet's
# edge against the table), the background comes from a closing at the working scale with a kernel of
# FINE_KERNEL px instead: still wider than a pencil stroke, but it keeps the step where it is.
STEP_RATIO = 0.12
FINE_KERNEL = 11


def working_rgb(image: Image.Image) -> np.ndarray:
    """The photo at working scale as RGB float32 in [0, 1]."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:
        # INTER_AREA averages, so thin strokes fade a little instead of vanishing between samples.
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey in [0, 1] in which graphite keeps its contrast and light blue ruling loses half of it."""
    # Half brightest channel, half luminance: graphite is dark in every channel, while the light blue
    # of ruled lines is bright in one, so it fades to ~half its contrast (a second line of defence
    # besides ruled_lines); a coloured pen stroke keeps half of its contrast and still passes.
    return rgb.max(axis=2) * 0.5 + cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) * 0.5


def _background(grey: np.ndarray) -> np.ndarray:
    """The paper's brightness under the photo's lighting, with the strokes removed."""
    h, w = grey.shape
    small = cv2.resize(grey, (max(1, w // BACKGROUND_STEP), max(1, h // BACKGROUND_STEP)), interpolation=cv2.INTER_AREA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (BACKGROUND_KERNEL, BACKGROUND_KERNEL))
    # Closing (max then min) removes dark features narrower than the kernel: strokes, not shadows.
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.GaussianBlur(closed, (0, 0), sigmaX=2.0)
    background = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    # The blur (and the coarse scale) smear a sharp step of the light, such as a hard shadow's edge
    # or the sheet's edge against the table, over ~25 px: a band along its dark side then reads as
    # darker than its paper, a false stroke as long as the edge. A closing at the working scale keeps
    # a step where it is (it changes only dark features narrower than its kernel, and a shadow is
    # wide), so near steps it gives the background. This divides a step out whatever its shape,
    # straight or curved, while a ruled pencil line, which has paper on both sides, stays a stroke.
    # It is not used everywhere because its kernel is narrow: a filled area a little wider than it
    # would become "paper" too.
    square = np.ones((3, 3), np.uint8)
    steps = (cv2.dilate(closed, square) > (1.0 + STEP_RATIO) * cv2.erode(closed, square)).astype(np.uint8)
    if steps.any():
        # As far as the blur reaches (3 sigma), blended in over a couple of px to leave no seam.
        near = cv2.dilate(steps, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))).astype(np.float32)
        weight = cv2.resize(cv2.GaussianBlur(near, (0, 0), sigmaX=1.0), (w, h), interpolation=cv2.INTER_LINEAR)
        fine_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (FINE_KERNEL, FINE_KERNEL))
        fine = cv2.morphologyEx(grey, cv2.MORPH_CLOSE, fine_kernel, borderType=cv2.BORDER_REPLICATE)
        background = weight * fine + (1.0 - weight) * background
    return np.maximum(background, 1e-3)


def relative_darkness(grey: np.ndarray) -> np.ndarray:
    """How much darker than the paper each pixel is, as a share: lighting and shadows divided out."""
    flat = 1.0 - grey / _background(grey)
    # A light blur averages JPEG blocks and grain; at sigma 0.7 a 1-px line keeps most of its depth.
    return cv2.GaussianBlur(np.clip(flat, 0.0, 1.0), (0, 0), sigmaX=0.7)

