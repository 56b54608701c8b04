"""Phone photos of pencil sketches cleaned into the inputs of sketch models (ControlNet scribble, pix2pix).

No torch here: this runs in the bot layer's upload path (off the event loop), with numpy, OpenCV
and Pillow only. Every step works at a working scale of at most WORK_SIDE px on the long side, so
a 12-MP photo costs about what a 1-MP one does; `stroke_mask` maps its result back to the input's
own resolution.
"""

from __future__ import annotations

import math

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
# Hysteresis on darkness relative to the paper (0 = paper, 1 = black): a pixel is stroke if it is
# darker than WEAK and connected to a pixel darker than STRONG. The floors hold on clean photos;
# on noisy ones both rise with the measured noise so that paper grain and JPEG blocks stay paper.
WEAK_FLOOR, WEAK_SIGMAS = 0.06, 3.5
STRONG_FLOOR, STRONG_SIGMAS = 0.12, 6.0
# Specks smaller than this (px at working scale) are dust, grain or JPEG ringing, not drawing.
MIN_SPECK = 14
# Ruled notebook lines: horizontal runs at least RULE_RUN × width long which, with their gaps
# bridged, span RULE_SPAN of the width at a median thickness of at most RULE_THICK px; at least
# RULE_COUNT of them on a page. Found on a lower threshold (RULE_FLOOR / RULE_SIGMAS) than strokes.
RULE_RUN, RULE_SPAN, RULE_THICK = 1 / 24, 0.5, 6
RULE_FLOOR, RULE_SIGMAS = 0.04, 2.0
RULE_COUNT = 3


def _working_grey(image: Image.Image) -> np.ndarray:
    """The photo at working scale as grey float32 in [0, 1]."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:
        # INTER_AREA averages, so thin strokes fade a little instead of vanishing between samples.
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    rgb = rgb.astype(np.float32) / 255.0
    # Half brightest channel, half luminance: graphite is dark in every channel, while the light blue
    # of ruled lines is bright in one, so it fades to ~half its contrast (a second line of defence
    # besides _ruled_lines); a coloured pen stroke keeps half of its contrast and still passes.
    grey = rgb.max(axis=2) * 0.5 + cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) * 0.5
    return grey


def _background(grey: np.ndarray) -> np.ndarray:
    """The paper's brightness under the photo's lighting, with the strokes removed."""
    h, w = grey.shape
    small = cv2.resize(grey, (max(1, w // BACKGROUND_STEP), max(1, h // BACKGROUND_STEP)), interpolation=cv2.INTER_AREA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (BACKGROUND_KERNEL, BACKGROUND_KERNEL))
    # Closing (max then min) removes dark features narrower than the kernel: strokes, not shadows.
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    paper = cv2.GaussianBlur(paper, (0, 0), sigmaX=2.0)
    return np.maximum(cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR), 1e-3)


def _darkness(grey: np.ndarray) -> np.ndarray:
    """How much darker than the paper each pixel is, as a share: lighting and shadows divided out."""
    flat = 1.0 - grey / _background(grey)
    # A light blur averages JPEG blocks and grain; at sigma 0.7 a 1-px line keeps most of its depth.
    return cv2.GaussianBlur(np.clip(flat, 0.0, 1.0), (0, 0), sigmaX=0.7)


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


def _ruled_lines(candidate: np.ndarray, darkness: np.ndarray, margin: float, at_least: int = RULE_COUNT) -> np.ndarray:
    """Pixels of ruled notebook lines (long, thin, near-horizontal, page-wide) that no stroke darkens."""
    h, w = candidate.shape
    run = max(15, int(w * RULE_RUN))
    # Opening with a 1×run line keeps only horizontal runs at least `run` long; a line tilted by
    # ~1/run or more still survives in stair-steps, as long as it is 1–3 px thick. Strokes crossing
    # a ruled line do not survive (they are not horizontal for `run` px).
    horizontal = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN,
                                  cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
    # Bridge the gaps where a shadow or a crossing stroke broke the line, so it is one component.
    bridged = cv2.morphologyEx(horizontal, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (3 * run, 1)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bridged, connectivity=8)
    width, height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    # Page-wide, and not much taller than the page's tilt allows (~4 % of the width).
    rule = (width >= RULE_SPAN * w) & (height <= RULE_THICK + 0.04 * width)
    rule[0] = False
    for label in np.flatnonzero(rule):
        # Thin: the typical (median) column of the component is at most RULE_THICK px tall; a few
        # columns are taller where a stroke touches the line, so the mean would mislead.
        x, y, bw, bh = stats[label, :4]
        thickness = (labels[y:y + bh, x:x + bw] == label).sum(axis=0)
        rule[label] = np.median(thickness[thickness > 0]) <= RULE_THICK
    # A notebook page has many ruled lines; a single page-wide line is more likely a drawn horizon.
    if rule.sum() < at_least:
        return np.zeros((h, w), bool)
    lines = np.zeros((h, w), bool)
    columns = np.arange(w)
    for label in np.flatnonzero(rule):
        x, y, bw, bh = stats[label, :4]
        ys, xs = np.nonzero((labels[y:y + bh, x:x + bw] == label) & (horizontal[y:y + bh, x:x + bw] > 0))
        xs, ys = xs + x, ys + y
        # A printed line is straight (a bent page makes it a gentle curve): fit y(x) with a
        # quadratic, then refit on the pixels near the first fit, so that a stroke which merged into
        # the component where it touched the line does not pull the curve away.
        fit = np.polyfit(xs, ys, 2)
        near = np.abs(ys - np.polyval(fit, xs)) <= 2.5
        if near.sum() >= 3:
            fit = np.polyfit(xs[near], ys[near], 2)
        residual = np.abs(ys - np.polyval(fit, xs))
        # Half the line's thickness, plus a pixel for its anti-aliased rim.
        reach = int(np.ceil(np.percentile(residual[residual <= 3.0], 95))) + 1 if (residual <= 3.0).any() else 1
        centre = np.round(np.polyval(fit, columns)).astype(int)
        for offset in range(-reach, reach + 1):
            rows = centre + offset
            inside = (rows >= 0) & (rows < h)
            rows, cols = rows[inside], columns[inside]
            if not len(rows):
                continue
            # Along the whole width (the line's broken pieces go too), but a pixel stays a stroke
            # where it is clearly darker than the line itself at this offset: graphite over the
            # line's ink darkens it by about the stroke's own darkness, so crossings survive.
            along = darkness[rows, cols]
            lines[rows, cols] |= along <= np.median(along) + margin
    return lines


def _mask_at_work_scale(image: Image.Image) -> np.ndarray:
    """The stroke mask at working scale (long side at most WORK_SIDE)."""
    grey = _working_grey(image)
    darkness = _darkness(grey)
    level, noise = _paper_level(darkness)
    weak = level + max(WEAK_FLOOR, WEAK_SIGMAS * noise)
    strong = level + max(STRONG_FLOOR, STRONG_SIGMAS * noise)
    mask = _hysteresis(darkness, weak, strong)
    # Ruled lines are found on a lower threshold than the strokes: a faint line is only partly above
    # `weak`, and the parts that touch a stroke would otherwise stay behind as short dashes.
    found = darkness > level + max(RULE_FLOOR, RULE_SIGMAS * noise)
    rules = _ruled_lines(found, darkness, weak - level)
    if rules.any():
        # A ruled page usually has a margin line too: the same test on the transposed page, where
        # one page-tall line is enough (the horizontal rules already said this is a notebook).
        rules |= _ruled_lines(np.ascontiguousarray(found.T), np.ascontiguousarray(darkness.T), weak - level, at_least=1).T
        mask &= ~rules
    return _without_specks(mask, MIN_SPECK)


def stroke_mask(image: Image.Image) -> np.ndarray:
    """Pencil strokes of a phone photo of a sketch, as a bool H×W array at the input's resolution."""
    mask = _mask_at_work_scale(image)
    w, h = image.size
    if mask.shape != (h, w):
        # Linear interpolation of the 0/1 mask, cut at one half: smooth edges rather than blocks.
        up = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        mask = up >= 0.5
    return mask


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
    mask = _mask_at_work_scale(image)
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
    mask = _mask_at_work_scale(image)
    coverage, offset = _fit(mask, (size, size))
    # The edges2* sets use ~1-px black edges on white: keep pixels at least a fifth covered.
    lines = _padded(coverage, offset, (size, size), 0.0) > 0.2
    pixels = np.where(lines, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels] * 3), "RGB")


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
