"""Phone photos of pencil sketches cleaned into the inputs of sketch models (ControlNet scribble, pix2pix).

No torch here: this runs in the bot layer's upload path (off the event loop), with numpy, OpenCV
and Pillow only. Every step works at a working scale of at most WORK_SIDE px on the long side, so
a 12-MP photo costs about what a 1-MP one does; `stroke_mask` maps its result back to the input's
own resolution. A photo that shows the table around the sheet is cleaned inside the sheet only
(`sheet_mask`), and a hard shadow's edge across the page is divided out with the lighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _working_rgb(image: Image.Image) -> np.ndarray:
    """The photo at working scale as RGB float32 in [0, 1]."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:
        # INTER_AREA averages, so thin strokes fade a little instead of vanishing between samples.
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Grey in [0, 1] in which graphite keeps its contrast and light blue ruling loses half of it."""
    # Half brightest channel, half luminance: graphite is dark in every channel, while the light blue
    # of ruled lines is bright in one, so it fades to ~half its contrast (a second line of defence
    # besides _ruled_lines); a coloured pen stroke keeps half of its contrast and still passes.
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
    if at_least > 1:
        # Printed rules are close (eight or more to a page) and evenly spaced down much of the page.
        # The top and bottom of a ruled frame around a drawing, a long horizon, or two such pairs
        # of lines close together, are not a notebook.
        found = np.flatnonzero(rule)
        # Each line's height is its pixels' median row: a stroke touching it stretches its box.
        centres = np.array([y + np.median(np.nonzero(labels[y:y + bh, x:x + bw] == label)[0])
                            for label, (x, y, bw, bh) in zip(found, stats[found, :4])])
        found, centres = found[np.argsort(centres)], np.sort(centres)
        gaps = np.diff(centres)
        spacing = float(np.median(gaps))
        even = int((np.abs(gaps - spacing) <= 0.25 * spacing).sum())
        if even < at_least - 1 or even * spacing < 0.25 * h or spacing > h / 8:
            return np.zeros((h, w), bool)
        # A line off that grid (its gaps to both neighbours not a whole number of spacings, where
        # a rule hidden under a drawing leaves a double gap) was drawn with a ruler: it stays.
        steps = gaps / spacing
        on_grid = (np.abs(steps - np.round(steps)) <= 0.2) & (np.round(steps) >= 1)
        kept = np.zeros(len(found), bool)
        kept[:-1] |= on_grid
        kept[1:] |= on_grid
        rule[found[~kept]] = False
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


# The sheet of paper. A photo not cropped to the page shows the table around it (grain, its edge, the
# floor), which would otherwise come out as strokes. The sheet is looked for at SHEET_SIDE px on the
# long side, with strokes and wood-grain streaks closed over (SHEET_CLOSE px), as the largest bright
# region (Otsu on log brightness) and then the convex polygon around that. Its sides that are not
# the frame's own edges are the sheet's edges, unless they are a cast shadow's edge across it (then
# the sheet goes on in the shade, and its far edges are looked for there).
SHEET_SIDE = 256
SHEET_CLOSE = 5
# A bright region under this share of the photo is not trusted to be the sheet (a glare, a light
# patch of table); the whole photo is then paper, as for a scan.
SHEET_MIN_SHARE = 0.2
# Across a sheet's edge the brightness falls by at least this ratio, read SHEET_PROBE px either side
# (at SHEET_SIDE): paper is brighter than any table, if only a little than light wood. A softer
# boundary is light falling off.
SHEET_STEP = math.log(1.2)
SHEET_PROBE = 3
# The bright region is cut apart where the brightness changes by this log ratio between neighbours:
# at sharp edges, not across the gentle slope of a soft shadow.
SHEET_CUT = 0.13
# Px at the working scale along the inside of the sheet's edge where strokes are not looked for.
SHEET_MARGIN = 3
# Times the sheet is looked for again with paper in the shade added to the lit paper.
SHEET_LOOKS = 3
# A sheet turned by less than this (degrees) is cleaned as it lies; more, and it is turned square first.
TILT_KEPT = 1.0
# Two surfaces whose colour (share of R, G and B) differs by more than this are different materials.
SHEET_CHROMA = 0.03


@dataclass(frozen=True)
class _Side:
    """One side of the polygon around the bright region, at the sheet-finding scale."""

    start: np.ndarray  # (x, y)
    end: np.ndarray
    inward: np.ndarray  # unit normal pointing into the polygon
    border: bool  # lies on the frame's own edge

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from start to end."""
        d = self.end - self.start
        return d / max(float(np.linalg.norm(d)), 1e-6)


def _between(a: np.ndarray, b: np.ndarray, toward: np.ndarray, border: bool = False) -> _Side:
    """The side from a to b whose inward normal points to the same side as `toward`."""
    d = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
    inward = np.array([-d[1], d[0]])
    return _Side(a, b, inward if inward @ toward >= 0 else -inward, border)


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2-D (or H×W×C) image at float (x, y) points, the edge pixels repeated beyond."""
    xy = points.astype(np.float32).reshape(-1, 1, 2)
    out = cv2.remap(image, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape((len(points),) + image.shape[2:])


def _along(start: np.ndarray, end: np.ndarray, trim: float = 0.15) -> np.ndarray:
    """Points about 1 px apart along a segment, without `trim` of its length at either end."""
    n = max(2, int(np.linalg.norm(end - start)))
    t = np.linspace(trim, 1.0 - trim, n)[:, None]
    return start + t * (end - start)


def _step(log: np.ndarray, points: np.ndarray, inward: np.ndarray) -> np.ndarray:
    """Log-brightness inside minus outside, SHEET_PROBE px either side of each point."""
    return _sample(log, points + SHEET_PROBE * inward) - _sample(log, points - SHEET_PROBE * inward)


def _jump(log: np.ndarray) -> np.ndarray:
    """The largest change of log brightness within each pixel's 3×3 neighbourhood."""
    square = np.ones((3, 3), np.uint8)
    return cv2.dilate(log, square) - cv2.erode(log, square)


def _bright_region(log: np.ndarray) -> np.ndarray | None:
    """The largest bright region (Otsu on log brightness) as a mask, or None if it is too small to be a sheet."""
    low, high = np.percentile(log, (0.5, 99.5))
    if high - low < SHEET_STEP:
        return None  # one surface under smooth light: nothing but paper in view
    levels = np.clip((log - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    _, bright = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Under uneven light a lit patch of table can be as bright as paper in the shade, and it touches
    # the sheet: the bright pixels are cut apart along every sharp step.
    bright[_jump(log) >= SHEET_CUT] = 0
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < SHEET_MIN_SHARE * log.size:
        return None
    return labels == largest


def _polygon(region: np.ndarray) -> list[_Side]:
    """The convex polygon around a region, as its sides in order."""
    h, w = region.shape
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(np.concatenate(contours))
    corners = cv2.approxPolyDP(hull, 0.01 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
    centre = corners.mean(axis=0)
    sides = []
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        # Both ends on the same edge of the frame: the region goes on beyond the photo there.
        border = any(abs(a[i] - edge) <= 1.5 and abs(b[i] - edge) <= 1.5
                     for i, edge in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)))
        sides.append(_between(a, b, centre - a, border))
    return sides


def _refined(log: np.ndarray, side: _Side) -> _Side:
    """The side moved onto the step next to it: a line fitted to where the brightness falls fastest outward."""
    if side.border:
        return side
    points = _along(side.start, side.end, 0.1)
    offsets = np.arange(-2 * SHEET_PROBE, 2 * SHEET_PROBE + 0.25, 0.5)
    grid = (points[:, None, :] + offsets[None, :, None] * side.inward).reshape(-1, 2)
    # The polygon's corners come from a hull of a thresholded, opened region: the side may sit a px
    # or two off the sheet's edge and a little askew. Across the side, the edge is where the log
    # brightness falls fastest going outward.
    fall = (_sample(log, grid + side.inward) - _sample(log, grid - side.inward)).reshape(len(points), len(offsets))
    # The innermost clear fall: a table's far edge just beyond the sheet's can fall further.
    peak = np.zeros_like(fall, dtype=bool)
    peak[:, 1:-1] = (fall[:, 1:-1] >= fall[:, :-2]) & (fall[:, 1:-1] >= fall[:, 2:])
    peak &= fall >= SHEET_STEP / 2
    best = len(offsets) - 1 - np.argmax(peak[:, ::-1], axis=1)
    sharp = peak.any(axis=1)
    if sharp.sum() < max(5, len(points) // 3):
        return side
    edge = (points + offsets[best][:, None] * side.inward)[sharp].astype(np.float32)
    vx, vy, x0, y0 = cv2.fitLine(edge, cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
    direction, origin = np.array([vx, vy], np.float64), np.array([x0, y0], np.float64)
    inward = np.array([-direction[1], direction[0]])
    if inward @ side.inward < 0:
        inward = -inward
    if inward @ side.inward < math.cos(math.radians(10)):
        return side  # turned by more than a sloppy hull can be off: not the same edge
    # The ends are the old ones dropped onto the new line; one on the frame's edge stays on it.
    h, w = log.shape

    def end(old: np.ndarray) -> np.ndarray:
        for axis, limit in ((0, 0.0), (0, w - 1.0), (1, 0.0), (1, h - 1.0)):
            if abs(old[axis] - limit) <= 1.5 and abs(direction[axis]) > 1e-3:
                return origin + (limit - origin[axis]) / direction[axis] * direction
        return origin + ((old - origin) @ direction) * direction

    return _Side(end(side.start), end(side.end), inward, False)


def _continues(log: np.ndarray, side: _Side, corner: np.ndarray, direction: np.ndarray, level: float) -> bool:
    """True if the step across `side` goes on past `corner` along `direction`, for ten px within twenty-five or so."""
    # Where a shadow's edge crosses the sheet's edge at a slant, the first px past the corner mix
    # paper and table: any of three stretches of ten px will do. And shifted by up to SHEET_PROBE
    # px across: a shadow's edge may bow away from the straight line.
    points = corner + (SHEET_PROBE + 2 + np.arange(20))[:, None] * direction
    steps = np.array([_step(log, points + shift * side.inward, side.inward)
                      for shift in range(-SHEET_PROBE, SHEET_PROBE + 1)])
    return max(float(np.median(steps[:, start:start + 10], axis=1).max()) for start in (0, 5, 10)) >= level


def _on_frame(point: np.ndarray, shape: tuple[int, int]) -> bool:
    """True for a point on (within 1.5 px of) the frame's edge."""
    h, w = shape
    return bool(point[0] <= 1.5 or point[1] <= 1.5 or point[0] >= w - 2.5 or point[1] >= h - 2.5)


def _same_material(rgb: np.ndarray, side: _Side) -> bool:
    """True if the surface just outside a side has the colour of the one inside (paper in shade, not table)."""
    points = _along(side.start, side.end, 0.2)
    share = rgb / np.maximum(rgb.sum(axis=2, keepdims=True), 1e-3)
    inside = np.median(_sample(share, points + 2 * SHEET_PROBE * side.inward), axis=0)
    outside = np.median(_sample(share, points - 2 * SHEET_PROBE * side.inward), axis=0)
    return float(np.abs(inside - outside).max()) <= SHEET_CHROMA


def _sheet_sides(rgb: np.ndarray) -> tuple[list[_Side], float] | None:
    """The sheet's edges in view at the sheet-finding scale, and that scale; None if the photo shows only paper."""
    h, w = rgb.shape[:2]
    scale = min(1.0, SHEET_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SHEET_CLOSE, SHEET_CLOSE))
    grey = cv2.morphologyEx(_grey(small), cv2.MORPH_CLOSE, disc)
    log = np.log(np.maximum(grey, 1.0 / 255.0))
    region = _bright_region(log)
    if region is None:
        return None
    for _ in range(SHEET_LOOKS):
        edges, shade = _edges_around(log, small, region)
        if shade is None:
            break
        region = region | shade  # the paper in the shade, found apart, joins the lit paper: look again
    return edges, scale


def _edges_around(log: np.ndarray, rgb: np.ndarray, region: np.ndarray) -> tuple[list[_Side], np.ndarray | None]:
    """The sheet's edges around the bright region; and paper in a shadow that hides them, to add to the region."""
    sides = [_refined(log, side) for side in _polygon(region)]
    steps = [float(np.median(_step(log, _along(side.start, side.end), side.inward))) for side in sides]
    # Each side is the frame's edge, a soft boundary (the light falls off there and the paper goes
    # on), a cast shadow's edge across the sheet, or the sheet's own edge.
    kinds = ["frame" if side.border else "soft" if step < SHEET_STEP else "shadow" if _shadow_edge(log, rgb, side, step)
             else "edge" for side, step in zip(sides, steps)]
    edges = [side for side, kind in zip(sides, kinds) if kind == "edge"]
    n = len(sides)
    for first in range(n):
        if kinds[first] != "shadow" or kinds[first - 1] == "shadow":
            continue
        last = first
        while kinds[(last + 1) % n] == "shadow" and (last + 1) % n != first:
            last = (last + 1) % n
        chain = [sides[k % n] for k in range(first, first + (last - first) % n + 1)]
        # The sheet goes on in the shade beyond this shadow's edge (one side or a bowed run of them).
        # Its own edges on either side go on into the shade with the same step against the table (a
        # shadow darkens both alike); where those steps end are its far corners. If they meet, the
        # shadow covers a corner; else the sheet's far edge runs between them.
        far, went = [], []
        for j, forward in ((first - 1, True), ((last + 1) % n, False)):
            if kinds[j] == "edge":
                corner, direction = ((sides[j].end, sides[j].direction) if forward
                                     else (sides[j].start, -sides[j].direction))
                far.append(_run(log, sides[j], corner, direction, max(SHEET_STEP, steps[j]) / 2))
                went.append(float(np.linalg.norm(far[-1] - corner)))
        if not far:
            continue  # from the frame's edge to the frame's edge: the sheet fills the frame that way
        reach = sum(float(np.linalg.norm(side.end - side.start)) for side in chain)
        if max(went) <= max(2 * SHEET_PROBE, 0.1 * reach):
            # Neither of the sheet's edges goes on far past it. Either the shadow hides them (it
            # runs about from corner to corner): then the paper in the shade is a bright region of
            # its own, right beyond the shadow's edge. Or this is the sheet's edge after all, lying
            # along another one (the table's far edge, the floor beyond).
            shade = _shaded_paper(log, region, chain)
            if shade is not None:
                return edges, shade
            edges.extend(chain)
            continue
        chord = chain[-1].end - chain[0].start
        a, b = (far[0], far[1]) if len(far) == 2 else (far[0], far[0] + chord)
        if np.linalg.norm(b - a) < 2 * SHEET_PROBE:
            continue
        beyond = _refined(log, _between(a, b, chain[0].inward))
        points = _along(beyond.start, beyond.end)
        points = points[np.all((points >= 0) & (points <= np.array(log.shape[::-1]) - 1), axis=1)]
        if len(points) and float(np.median(_step(log, points, beyond.inward))) >= SHEET_STEP:
            edges.append(beyond)
    return edges, None


def _shaded_paper(log: np.ndarray, region: np.ndarray, chain: list[_Side]) -> np.ndarray | None:
    """The bright region in the shade right beyond a shadow's edge (Otsu there alone), or None if there is none."""
    h, w = log.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    beyond = np.zeros((h, w), bool)
    for side in chain:
        beyond |= (xx - side.start[0]) * side.inward[0] + (yy - side.start[1]) * side.inward[1] < 0
    beyond &= ~region
    if beyond.sum() < 16:
        return None
    values = log[beyond]
    low, high = float(values.min()), float(values.max())
    if high - low < SHEET_STEP:
        return None
    levels = np.clip((log - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    threshold, _ = cv2.threshold(levels[beyond].reshape(1, -1), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = (beyond & (levels > threshold) & (_jump(log) < SHEET_CUT)).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    labels = cv2.connectedComponents(bright, connectivity=4)[1]
    # Paper in the shade meets the shadow's edge along its length; a lit patch of table beyond
    # it, or the table past a floor's edge, does not.
    points = np.round(np.concatenate([_along(side.start, side.end) - (SHEET_PROBE + 2) * side.inward
                                      for side in chain])).astype(int)
    points = points[(points[:, 0] >= 0) & (points[:, 1] >= 0) & (points[:, 0] < w) & (points[:, 1] < h)]
    if not len(points):
        return None
    found, counts = np.unique(labels[points[:, 1], points[:, 0]], return_counts=True)
    chosen = found[(found > 0) & (counts >= len(points) / 4)]
    return np.isin(labels, chosen) if len(chosen) else None


def _run(log: np.ndarray, side: _Side, origin: np.ndarray, direction: np.ndarray, level: float) -> np.ndarray:
    """Where the step across `side` ends, going from `origin` along `direction` (at the frame's edge at most)."""
    h, w = log.shape
    limits = [((0.0 if d < 0 else (w - 1.0, h - 1.0)[axis]) - origin[axis]) / d
              for axis, d in enumerate(direction) if abs(d) > 1e-6]
    points = origin + np.arange(max(1, int(min(limits))) + 1)[:, None] * direction
    # It ends where the step stays below `level` for a stretch: a stroke or a streak of grain across
    # the edge, or the few px next to a shadow's edge (where one probe is in the shade and the
    # other not), are gaps, not the end.
    low = (_step(log, points, side.inward) < level).astype(np.int32)
    gap = 2 * SHEET_PROBE + 1
    runs = np.convolve(low, np.ones(gap, np.int32), mode="valid")
    ended = np.flatnonzero(runs == gap)
    return points[ended[0]] if len(ended) else points[-1]


def _shadow_edge(log: np.ndarray, rgb: np.ndarray, side: _Side, step: float) -> bool:
    """True if a sharp side of the bright region is a cast shadow's edge across the sheet, not the sheet's edge."""
    # A shadow's edge bounds the lit part of the sheet as sharply as the sheet's edge does. It is
    # told apart by its ends: the shadow falls on the table too, so its edge goes on past the sheet,
    # while past a true corner of the sheet there is table on both sides. Where an end is at the
    # frame's edge there is no such proof, and the colour decides: paper in the shade keeps the
    # paper's colour, a table has its own.
    level = max(SHEET_STEP, step) / 2
    ends = [None if _on_frame(corner, log.shape) else _continues(log, side, corner, direction, level)
            for corner, direction in ((side.start, -side.direction), (side.end, side.direction))]
    if False in ends:
        return False
    return None not in ends or _same_material(rgb, side)


def _sheet_region(rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The sheet as a bool mask at working scale and its tilt in degrees; None if the photo shows only paper."""
    found = _sheet_sides(rgb)
    if found is None or not found[0]:
        return None
    sides, scale = found
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    region = np.ones((h, w), bool)
    for s in sides:
        # Pixel centres at the sheet-finding scale mapped to the working scale.
        start = (s.start + 0.5) / scale - 0.5
        region &= (xx - start[0]) * s.inward[0] + (yy - start[1]) * s.inward[1] >= 0
    if region.mean() < SHEET_MIN_SHARE or region.all():
        return None
    # How far the sheet is turned: its edges' angles folded into ±45°, weighted by their length;
    # the top and bottom edges alone if both are in view, as ruled lines run along them.
    angles = np.array([math.degrees(math.atan2(*(s.end - s.start)[::-1])) for s in sides])
    lengths = np.array([np.linalg.norm(s.end - s.start) for s in sides])
    across = np.abs((angles + 90.0) % 180.0 - 90.0) < 45.0
    if across.sum() >= 2:
        angles, lengths = angles[across], lengths[across]
    return region, float(np.average((angles + 45.0) % 90.0 - 45.0, weights=lengths))


def _strokes(grey: np.ndarray, paper: np.ndarray | None) -> np.ndarray:
    """The stroke mask of a grey photo; `paper` (if given) says which pixels are the sheet, the rest is not."""
    darkness = _darkness(grey)
    level, noise = _paper_level(darkness if paper is None else darkness[paper])
    weak = level + max(WEAK_FLOOR, WEAK_SIGMAS * noise)
    strong = level + max(STRONG_FLOOR, STRONG_SIGMAS * noise)
    mask = _hysteresis(darkness, weak, strong)
    # Ruled lines are found on a lower threshold than the strokes: a faint line is only partly above
    # `weak`, and the parts that touch a stroke would otherwise stay behind as short dashes.
    found = darkness > level + max(RULE_FLOOR, RULE_SIGMAS * noise)
    if paper is not None:
        found &= paper
    rules = _ruled_lines(found, darkness, weak - level)
    if rules.any():
        # A ruled page usually has a margin line too: the same test on the transposed page, where
        # one page-tall line is enough (the horizontal rules already said this is a notebook).
        rules |= _ruled_lines(np.ascontiguousarray(found.T), np.ascontiguousarray(darkness.T), weak - level, at_least=1).T
        mask &= ~rules
    if paper is not None:
        mask &= paper
    return _without_specks(mask, MIN_SPECK)


def _mask_at_work_scale(image: Image.Image) -> np.ndarray:
    """The stroke mask at working scale (long side at most WORK_SIDE)."""
    rgb = _working_rgb(image)
    grey = _grey(rgb)
    found = _sheet_region(rgb)
    if found is None:
        return _strokes(grey, None)
    sheet, tilt = found
    # The sheet's edge itself, blurred over a px or two and found to about a px, is darker than the
    # paper: strokes are looked for from SHEET_MARGIN px inside it.
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * SHEET_MARGIN + 1, 2 * SHEET_MARGIN + 1))
    paper = cv2.erode(sheet.astype(np.uint8), disc)
    h, w = sheet.shape
    # Cleaned on the sheet alone, turned square to the frame: the paper's level and noise are the
    # sheet's, and ruled lines are level and measured against the sheet's width, not the photo's.
    # Turning resamples the photo once and the mask once more; a sheet within TILT_KEPT of square
    # is only cropped. (Turned, not warped in perspective: a mild keystone leaves the rules within
    # the couple of degrees that _ruled_lines allows, and a turn needs no corners out of frame.)
    ys, xs = np.nonzero(sheet)
    if abs(tilt) < TILT_KEPT:
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        mask = np.zeros(sheet.shape, bool)
        mask[box] = _strokes(grey[box], paper[box].astype(bool))
        return mask
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


def sheet_mask(image: Image.Image) -> np.ndarray:
    """The sheet of paper in a photo, as a bool H×W array at the input's resolution (all True if it fills it)."""
    found = _sheet_region(_working_rgb(image))
    w, h = image.size
    if found is None:
        return np.ones((h, w), bool)
    return cv2.resize(found[0].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


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
