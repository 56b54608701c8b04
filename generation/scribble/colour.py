"""Whether a drawing is coloured in, and so better drawn over by image→image than by a sketch model."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

# A pixel is colour if its chroma differs from the paper's by this much (OpenCV 8-bit Lab units,
# where a/b run 0–255): ruled-line blue and yellowish paper stay below it, crayon is far above.
COLOUR_CHROMA = 28
# A sketch is "coloured" when at least this share of the page is filled colour (after an erosion
# that deletes coloured lines, so a blue-pen drawing or ruled lines do not count as fills).
COLOUR_FILLED = 0.08


def is_coloured(image: Image.Image) -> bool:
    """True for a coloured drawing (mostly filled colour areas) better sent through image→image."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = min(1.0, 256 / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    # The paper's own tint (yellowish, warm light) is the reference, taken from the brightest pixels.
    bright = lab[..., 0] >= np.percentile(lab[..., 0], 80)
    paper = np.median(lab[bright][:, 1:], axis=0)
    chroma = np.linalg.norm(lab[..., 1:] - paper, axis=2)
    coloured = (chroma > COLOUR_CHROMA).astype(np.uint8)
    # Erode with 5×5 at 256 px: lines up to ~4 px wide vanish, filled areas stay.
    filled = cv2.erode(coloured, np.ones((5, 5), np.uint8))
    return bool(filled.mean() >= COLOUR_FILLED)
