"""Pencil strokes found in a photo of a sketch: darker than the paper, long enough, not ruled lines."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from generation.scribble.light import relative_darkness, to_grey, working_rgb
from generation.scribble.rules import RULE_FLOOR, RULE_SIGMAS, ruled_lines
from generation.scribble.sheet import sheet_region

# Hysteresis on darkness relative to the paper (0 = paper, 1 = black): a pixel is stroke if it is
# darker than WEAK and connected to a pixel darker than STRONG. The floors hold on clean photos;
# on noisy ones both rise with the measured noise so that paper grain and JPEG blocks stay paper.
WEAK_FLOOR, WEAK_SIGMAS = 0.06, 3.5
STRONG_FLOOR, STRONG_SIGMAS = 0.12, 6.0
# Specks smaller than this (px at working scale) are dust, grain or JPEG ringing, not drawing.
MIN_SPECK = 14
# Px at the working scale along the inside of the sheet's edge where strokes are not looked for.
SHEET_MARGIN = 3
# A sheet turned by less than this (degrees) is cleaned as it lies; more, and it is turned square first.
TILT_KEPT = 1.0


def _paper_level(darkness: np.ndarray) -> tuple[float, float]:
    """The paper's typical darkness and its noise (median absolute deviation; strokes are a minority)."""
    paper = darkness[darkness <= np.percentile(darkness, 80)]
    median = float(np.median(paper))
    return median, 1.4826 * float(np.median(np.abs(paper - median)))


def _hysteresis(darkness: np.ndarray, weak: float, strong: float) -> np.ndarray:
    """Pixels above `weak` in connected pieces that reach above `strong` (Canny-style)."""
    candidate = (darkness > weak).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidate, connectivity=8)
    has_strong = np.zeros(count, bool)
    has_strong[labels[darkness > strong]] = True
    has_strong[0] = False
    return has_strong[labels]


def _without_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The mask without connected pieces smaller than `min_area` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]



def _strokes(grey: np.ndarray, paper: np.ndarray | None) -> np.ndarray:
    """The stroke mask of a grey photo; `paper` (if given) says which pixels are the sheet, the rest is not."""
    darkness = relative_darkness(grey)
    level, noise = _paper_level(darkness if paper is None else darkness[paper])
    weak = level + max(WEAK_FLOOR, WEAK_SIGMAS * noise)
    strong = level + max(STRONG_FLOOR, STRONG_SIGMAS * noise)
    mask = _hysteresis(darkness, weak, strong)
    # Ruled lines are found on a lower threshold than the strokes: a faint line is only partly above
    # `weak`, and the parts that touch a stroke would otherwise stay behind as short dashes.
    found = darkness > level + max(RULE_FLOOR, RULE_SIGMAS * noise)
    if paper is not None:
        found &= paper
    rules = ruled_lines(found, darkness, weak - level)
    if rules.any():
        # A ruled page usually has a margin line too: the same test on the transposed page, where
        # one page-tall line is enough (the horizontal rules already said this is a notebook).
        rules |= ruled_lines(np.ascontiguousarray(found.T), np.ascontiguousarray(darkness.T), weak - level, at_least=1).T
        mask &= ~rules
    if paper is not None:
        mask &= paper
    return _without_specks(mask, MIN_SPECK)


def mask_at_work_scale(image: Image.Image) -> np.ndarray:
    """The stroke mask at working scale (long side at most WORK_SIDE)."""
    rgb = working_rgb(image)
    grey = to_grey(rgb)
    found = sheet_region(rgb)
    if found is None:
        return _strokes(grey, None)
    sheet, tilt = found
    # The sheet's edge itself, blurred over a px or two and found to about a px, is darker than the
    # paper: strokes are looked for from SHEET_MARGIN px inside it.
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * SHEET_MARGIN + 1, 2 * SHEET_MARGIN + 1))
    paper = cv2.erode(sheet.astype(np.uint8), disc)
    # Cleaned on the sheet alone, turned square to the frame: the paper's level and noise are the
    # sheet's, and ruled lines are level and measured against the sheet's width, not the photo's.
    # Turning resamples the photo once and the mask once more; a sheet within TILT_KEPT of square
    # is only cropped. (Turned, not warped in perspective: a mild keystone leaves the rules within
    # the couple of degrees that ruled_lines allows, and a turn needs no corners out of frame.)
    ys, xs = np.nonzero(sheet)
    if abs(tilt) < TILT_KEPT:
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        mask = np.zeros(sheet.shape, bool)
        mask[box] = _strokes(grey[box], paper[box].astype(bool))
        return mask
    return _turned_strokes(grey, paper, xs, ys, tilt)


def _turned_strokes(grey: np.ndarray, paper: np.ndarray, xs: np.ndarray, ys: np.ndarray, tilt: float) -> np.ndarray:
    """The strokes on the sheet (pixels xs, ys), looked for with the sheet turned square, mapped back."""
    h, w = grey.shape
    turn = cv2.getRotationMatrix2D((float(xs.mean()), float(ys.mean())), tilt, 1.0)
    corners = np.array([(x, y, 1.0) for x in (xs.min(), xs.max()) for y in (ys.min(), ys.max())])
    placed = corners @ turn.T
    turn[:, 2] -= placed.min(axis=0)
    size = tuple(int(math.ceil(v)) + 1 for v in placed.max(axis=0) - placed.min(axis=0))
    square_grey = cv2.warpAffine(grey, turn, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    square_paper = cv2.warpAffine(paper, turn, size, flags=cv2.INTER_NEAREST).astype(bool)
    strokes = _strokes(square_grey, square_paper).astype(np.float32)
    back = cv2.warpAffine(strokes, turn, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return (back >= 0.5) & paper.astype(bool)


def stroke_mask(image: Image.Image) -> np.ndarray:
    """Pencil strokes of a phone photo of a sketch, as a bool H×W array at the input's resolution."""
    mask = mask_at_work_scale(image)
    w, h = image.size
    if mask.shape != (h, w):
        # Linear interpolation of the 0/1 mask, cut at one half: smooth edges rather than blocks.
        up = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        mask = up >= 0.5
    return mask
