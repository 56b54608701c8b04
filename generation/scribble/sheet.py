"""The sheet of paper in a photo that also shows the table around it, found by its edges."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from generation.scribble.light import to_grey, working_rgb

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
# Times the sheet is looked for again with paper in the shade added to the lit paper.
SHEET_LOOKS = 3
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
    grey = cv2.morphologyEx(to_grey(small), cv2.MORPH_CLOSE, disc)
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
        found, shade = _beyond_shadow(log, region, sides, kinds, steps, first, last)
        if shade is not None:
            return edges, shade
        edges.extend(found)
    return edges, None


def _beyond_shadow(
    log: np.ndarray, region: np.ndarray, sides: list[_Side], kinds: list[str], steps: list[float], first: int, last: int,
) -> tuple[list[_Side], np.ndarray | None]:
    """The sheet's edges in the shade beyond the shadow's edge sides[first..last]; or the paper there, if they hide."""
    n = len(sides)
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
        return [], None  # from the frame's edge to the frame's edge: the sheet fills the frame that way
    reach = sum(float(np.linalg.norm(side.end - side.start)) for side in chain)
    if max(went) <= max(2 * SHEET_PROBE, 0.1 * reach):
        # Neither of the sheet's edges goes on far past it. Either the shadow hides them (it
        # runs about from corner to corner): then the paper in the shade is a bright region of
        # its own, right beyond the shadow's edge. Or this is the sheet's edge after all, lying
        # along another one (the table's far edge, the floor beyond).
        shade = _shaded_paper(log, region, chain)
        return ([], shade) if shade is not None else (chain, None)
    chord = chain[-1].end - chain[0].start
    a, b = (far[0], far[1]) if len(far) == 2 else (far[0], far[0] + chord)
    if np.linalg.norm(b - a) < 2 * SHEET_PROBE:
        return [], None
    beyond = _refined(log, _between(a, b, chain[0].inward))
    points = _along(beyond.start, beyond.end)
    points = points[np.all((points >= 0) & (points <= np.array(log.shape[::-1]) - 1), axis=1)]
    if len(points) and float(np.median(_step(log, points, beyond.inward))) >= SHEET_STEP:
        return [beyond], None
    return [], None


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


def sheet_region(rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
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



def sheet_mask(image: Image.Image) -> np.ndarray:
    """The sheet of paper in a photo, as a bool H×W array at the input's resolution (all True if it fills it)."""
    found = sheet_region(working_rgb(image))
    w, h = image.size
    if found is None:
        return np.ones((h, w), bool)
    return cv2.resize(found[0].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)

