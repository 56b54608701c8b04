"""Phone photos of pencil sketches with known strokes, and the metrics that score a stroke mask.

Shared by tests/generation/test_scribble.py and benchmarks/sketch_cleanup.py. The drawings come
from photographs shipped inside scikit-image (nothing is downloaded) turned into line drawings by
Canny edges, plus one hand-drawn-looking scribble with varying pencil pressure; each is then
"photographed": coloured or ruled paper, a lighting gradient, a soft shadow, paper texture, sensor
noise, a slight blur and JPEG compression. The truth mask is every pixel the pencil touched, at the
photo's own resolution. `staged_sketches` adds what a photo not cropped to the page shows: the sheet
turned and in perspective on a table (wood grain, the table's edge, the floor), a hard-edged cast
shadow, and a ruler-drawn line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data
from PIL import Image
from skimage.feature import canny

# Long side of every drawing; a phone photo cropped to the page at a modest resolution.
DRAWING_SIDE = 900

PAPERS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 247),
    "offwhite": (238, 233, 220),
    "yellowish": (246, 232, 188),
    "ruled": (244, 242, 234),
}


@dataclass(frozen=True)
class Degradation:
    """How one photo of a drawing is taken."""

    paper: str
    gradient: float  # darkest corner of the lighting, as a share of full light
    shadow: float  # 1.0 = no shadow; else the light left inside the shadow
    noise: float  # sensor noise, standard deviation in 0–255 units
    blur: float  # Gaussian sigma in pixels (focus, hand shake)
    quality: int  # JPEG quality


def _sources() -> dict[str, np.ndarray]:
    """Greyscale float photos in [0, 1] with clear structure, from skimage.data."""
    def grey(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32) / 255.0
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)

    return {
        "astronaut": grey(skimage.data.astronaut()),
        "camera": grey(skimage.data.camera()),
        "coffee": grey(skimage.data.coffee()),
        "chelsea": grey(skimage.data.chelsea()),
        "rocket": grey(skimage.data.rocket()),
        "coins": grey(skimage.data.coins()),
    }


def _resize_long_side(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise scaled up, for pencil pressure and paper blotches."""
    h, w = shape
    coarse = rng.random((max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w)))).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def _edge_drawing(grey: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Canny edges of a photo as pencil strokes: (truth mask, darkness 0–1 per pixel)."""
    grey = _resize_long_side(grey, DRAWING_SIDE)
    edges = canny(grey, sigma=3.0, low_threshold=0.05, high_threshold=0.12).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    # Per stroke (connected edge chain): a width of 1–3 px and a darkness; a third are faint
    # (light grey, a soft pencil barely pressed), the rest dark. A sketcher draws no single dots.
    keep = stats[:, cv2.CC_STAT_AREA] >= 40
    keep[0] = False
    width = rng.integers(1, 4, count)
    dark = np.where(rng.random(count) < 0.33, rng.uniform(0.30, 0.45, count), rng.uniform(0.6, 0.85, count))
    pressure = 0.75 + 0.25 * _smooth_field(rng, grey.shape, 12)
    darkness = np.zeros(grey.shape, np.float32)
    for thickness in (1, 2, 3):
        chosen = keep & (width == thickness)
        layer = np.where(chosen, dark, 0.0).astype(np.float32)[labels]
        if thickness > 1:  # grey dilation keeps the darker stroke where two overlap
            layer = cv2.dilate(layer, np.ones((thickness, thickness), np.uint8))
        darkness = np.maximum(darkness, layer)
    truth = darkness > 0
    darkness *= pressure
    return truth, darkness


def _hand_drawing(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Free-hand curves drawn with varying pressure and width: (truth mask, darkness)."""
    h, w = 675, DRAWING_SIDE
    darkness = np.zeros((h, w), np.float32)
    for _ in range(22):
        # A wandering stroke: a random walk whose heading turns smoothly, like a wrist.
        points = [np.array([rng.uniform(60, w - 60), rng.uniform(60, h - 60)])]
        heading, turn = rng.uniform(0, 2 * np.pi), 0.0
        for _ in range(int(rng.integers(30, 120))):
            turn = 0.8 * turn + rng.normal(0, 0.08)
            heading += turn
            step = points[-1] + 4.0 * np.array([np.cos(heading), np.sin(heading)])
            if not (10 < step[0] < w - 10 and 10 < step[1] < h - 10):
                break
            points.append(step)
        peak, full_width = rng.uniform(0.3, 0.85), int(rng.integers(1, 4))
        n = len(points)
        for i in range(n - 1):
            # Pressure rises at the start of a stroke and lifts off at the end.
            pressure = np.sin(np.pi * (i + 0.5) / n) ** 0.5
            # The pencil's width per stroke narrows to 1 px where the pressure lifts.
            p, q = (tuple(int(v) for v in np.round(points[j])) for j in (i, i + 1))
            width = 1 if pressure < 0.5 else full_width
            cv2.line(darkness, p, q, float(max(0.25, peak * pressure)), thickness=width)
    return darkness > 0, darkness


def _sheet(darkness: np.ndarray, how: Degradation, rng: np.random.Generator, rules: bool) -> np.ndarray:
    """Pencil darkness on paper (fibre, blotches, ruled lines) as RGB reflectance in [0, 1]."""
    h, w = darkness.shape
    paper = np.empty((h, w, 3), np.float32)
    paper[:] = np.array(PAPERS[how.paper], np.float32) / 255.0
    # Paper fibre: fine grain plus large faint blotches.
    grain = rng.normal(0, 0.012, (h, w)).astype(np.float32)
    paper *= (1.0 + grain + 0.03 * (_smooth_field(rng, (h, w), 6) - 0.5))[..., None]
    if rules:
        ink = np.ones((h, w, 3), np.float32)
        colour = np.array((150, 185, 225), np.float32) / 255.0 if rng.random() < 0.7 else np.full(3, 0.72, np.float32)
        spacing = int(rng.integers(28, 38))
        tilt = rng.uniform(-0.01, 0.01)  # the page is never quite square to the camera
        for y in range(int(rng.integers(20, 50)), h, spacing):
            y0, y1 = y, int(round(y + tilt * w))
            cv2.line(ink, (0, y0), (w - 1, y1), tuple(float(c) for c in colour), int(rng.integers(1, 3)), cv2.LINE_AA)
        margin = int(w * rng.uniform(0.08, 0.14))
        cv2.line(ink, (margin, 0), (margin, h - 1), (0.93, 0.62, 0.65), 1, cv2.LINE_AA)
        paper *= ink
    pencil = np.float32(0.93)  # graphite is a slightly warm dark grey, not black
    return paper * (1.0 - darkness * pencil)[..., None]


def _expose(image: np.ndarray, how: Degradation, rng: np.random.Generator,
            hard_shadow: np.ndarray | None = None) -> Image.Image:
    """A scene's reflectance lit, shadowed, noised, blurred and JPEG-compressed like a phone photo.

    `hard_shadow`, if given, is a factor on the light per pixel: a sharp cast shadow, 1 outside it.
    """
    h, w = image.shape[:2]
    # Light: a linear gradient in a random direction, then a soft shadow (a hand or the phone).
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    light = how.gradient + (1.0 - how.gradient) * ramp
    if how.shadow < 1.0:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        axes = (int(rng.uniform(0.25, 0.5) * w), int(rng.uniform(0.25, 0.5) * h))
        blob = np.zeros((h, w), np.float32)
        cv2.ellipse(blob, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), sigmaX=rng.uniform(15, 40))
        light *= 1.0 - (1.0 - how.shadow) * blob
    if hard_shadow is not None:
        light *= hard_shadow
    image = image.copy()
    image *= light[..., None]
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=how.blur)
    image += rng.normal(0, how.noise / 255.0, image.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=how.quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _photograph(darkness: np.ndarray, how: Degradation, rng: np.random.Generator,
                rules: bool) -> Image.Image:
    """Pencil darkness on paper, photographed with the page filling the frame."""
    return _expose(_sheet(darkness, how, rng, rules), how, rng)


# Each source is photographed twice with different settings; together they cover every paper,
# a shadow on about half, mild to strong gradients and JPEG quality 60–85.
_PLAN: list[tuple[str, Degradation]] = [
    ("astronaut", Degradation("white", 0.80, 0.60, 2.0, 0.8, 80)),
    ("astronaut", Degradation("ruled", 0.70, 1.00, 3.0, 1.0, 70)),
    ("camera", Degradation("yellowish", 0.65, 0.70, 2.5, 0.9, 65)),
    ("camera", Degradation("offwhite", 0.90, 1.00, 4.0, 0.7, 85)),
    ("coffee", Degradation("ruled", 0.75, 0.55, 2.5, 0.8, 75)),
    ("coffee", Degradation("white", 0.60, 1.00, 3.5, 1.1, 60)),
    ("chelsea", Degradation("offwhite", 0.70, 0.65, 3.0, 1.0, 70)),
    ("chelsea", Degradation("yellowish", 0.85, 1.00, 2.0, 0.8, 80)),
    ("rocket", Degradation("ruled", 0.65, 0.70, 2.0, 0.9, 80)),
    ("coins", Degradation("yellowish", 0.75, 0.60, 3.0, 0.8, 65)),
    ("hand", Degradation("ruled", 0.70, 0.60, 3.0, 0.9, 70)),
    ("hand", Degradation("offwhite", 0.65, 1.00, 2.5, 1.0, 75)),
]


def degraded_sketches(seed: int = 0) -> list[tuple[str, np.ndarray, Image.Image]]:
    """Phone photos of pencil drawings: (name, truth stroke mask H×W bool, RGB photo) per variant."""
    rng = np.random.default_rng(seed)
    sources = _sources()
    out = []
    for index, (source, how) in enumerate(_PLAN):
        if source == "hand":
            truth, darkness = _hand_drawing(rng)
        else:
            truth, darkness = _edge_drawing(sources[source], rng)
        photo = _photograph(darkness, how, rng, rules=how.paper == "ruled")
        out.append((f"{index:02d}-{source}-{how.paper}-q{how.quality}", truth, photo))
    return out


# Tables the sheet lies on in a photo that is not cropped to the page: all darker than paper.
TABLES: dict[str, tuple[int, int, int]] = {
    "oak": (172, 128, 84),
    "walnut": (98, 68, 48),
    "grey": (118, 120, 124),
}
FLOOR = (52, 47, 44)
# Long side of a photo that shows the table around the sheet.
FRAME_SIDE = 1000


@dataclass(frozen=True)
class Scene:
    """What a phone photo shows besides the drawing: the table around the sheet, a hard cast shadow, a ruler line."""

    table: str | None  # a key of TABLES, or None: the sheet fills the frame (a scan, a photo cropped to the page)
    tilt: float  # the sheet's rotation on the table, degrees
    keystone: float  # perspective: each corner moved by up to this share of the sheet's size
    table_edge: bool  # the table's far edge in view, with the floor beyond
    hard_shadow: float  # 1.0 = none; else the light left inside a sharp-edged cast shadow (a phone, a hand)
    bow: float  # the shadow edge's curvature: its sagitta as a share of the frame's diagonal
    ruler: bool  # a ruler-drawn straight line: beside the shadow's edge, else a frame just inside the sheet's border


@dataclass(frozen=True)
class StagedSketch:
    """A phone photo of a drawing with its truth: the strokes, the sheet, a hard shadow's edge and the ruler line."""

    name: str
    truth: np.ndarray  # bool H×W: every pixel the pencil touched (the ruler line included)
    photo: Image.Image
    sheet: np.ndarray  # bool H×W: the sheet of paper (all True when it fills the frame)
    corners: np.ndarray  # 4×2 float32: the sheet's corners in photo px, clockwise from its top left
    shadow_edge: np.ndarray  # bool H×W: within 3 px of a hard shadow's edge (all False without one)
    ruler: np.ndarray  # bool H×W: the ruler-drawn line (all False without one)


def _noise_1d(rng: np.random.Generator, coordinate: np.ndarray, step: float) -> np.ndarray:
    """Smooth 1-D noise in [0, 1] sampled at `coordinate`: random values every `step` units, interpolated."""
    low = float(coordinate.min())
    knots = rng.random(int((float(coordinate.max()) - low) / step) + 2).astype(np.float32)
    return np.interp(coordinate, low + step * np.arange(len(knots)), knots).astype(np.float32)


def _table(kind: str, shape: tuple[int, int], rng: np.random.Generator, edge: bool) -> np.ndarray:
    """A table top as RGB reflectance: wood grain (fine fibres, broad bands, dark streaks) or a speckled desk."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "grey":
        speckle = cv2.GaussianBlur(rng.normal(0, 0.04, (h, w)).astype(np.float32), (0, 0), sigmaX=0.8)
        shade = 1.0 + speckle + 0.06 * (_smooth_field(rng, (h, w), 5) - 0.5)
    else:
        # Grain runs along one direction and wavers; across it, fibres every few px, broad light
        # and dark bands, and a few dark streaks as sharp as pencil lines.
        phi = rng.uniform(0, np.pi)
        along = np.cos(phi) * xx + np.sin(phi) * yy
        across = -np.sin(phi) * xx + np.cos(phi) * yy
        across = across + 12.0 * np.sin(along / rng.uniform(120, 260) + rng.uniform(0, 2 * np.pi))
        fibres = _noise_1d(rng, across, 2.5)
        bands = _noise_1d(rng, across, 30.0)
        streaks = _noise_1d(rng, across, 1.5) > 0.93
        shade = 1.0 + 0.10 * (fibres - 0.5) + 0.24 * (bands - 0.5) - 0.25 * streaks
    table = np.array(TABLES[kind], np.float32) / 255.0 * shade[..., None]
    if edge:
        # The table's far edge near one side of the frame, the floor beyond it.
        side = int(rng.integers(4))
        depth = rng.uniform(0.04, 0.08) * (h if side % 2 == 0 else w)
        slope = rng.uniform(-0.05, 0.05)
        beyond = {0: yy < depth + slope * xx, 1: xx > w - depth + slope * yy,
                  2: yy > h - depth + slope * xx, 3: xx < depth + slope * yy}[side]
        floor = np.array(FLOOR, np.float32) / 255.0 * (1.0 + rng.normal(0, 0.03, (h, w, 1))).astype(np.float32)
        table[beyond] = floor[beyond]
    return np.clip(table, 0.0, 1.0)


def _placement(sheet: tuple[int, int], rng: np.random.Generator, scene: Scene) -> tuple[tuple[int, int], np.ndarray]:
    """Frame size (w, h) and the sheet's corners in it: scaled to leave table on every side, turned, in perspective."""
    w, h = sheet
    frame = (FRAME_SIDE, round(FRAME_SIDE * h / w)) if w >= h else (round(FRAME_SIDE * w / h), FRAME_SIDE)
    scale = rng.uniform(0.74, 0.84) * frame[0] / w
    turn = np.deg2rad(scene.tilt)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]], np.float32)
    corners = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)], np.float32) * scale
    corners = corners @ rotation.T
    corners += rng.uniform(-scene.keystone, scene.keystone, (4, 2)).astype(np.float32) * np.float32(scale * max(w, h))
    size = np.array(frame, np.float32)
    centre = size / 2 + rng.uniform(-0.03, 0.03, 2).astype(np.float32) * size
    return frame, (corners + centre).astype(np.float32)


def _hard_shadow(frame: tuple[int, int], rng: np.random.Generator, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """A sharp cast shadow over a quarter to under half of the frame: (light factor H×W, signed px from its edge)."""
    w, h = frame
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    across = np.cos(theta) * (xx - w / 2) + np.sin(theta) * (yy - h / 2)
    along = -np.sin(theta) * (xx - w / 2) + np.cos(theta) * (yy - h / 2)
    diagonal = float(np.hypot(w, h))
    # A bowed edge: the sagitta at the middle, falling off as a parabola towards the frame's corners.
    signed = across + scene.bow * diagonal * (1.0 - (2.0 * along / diagonal) ** 2)
    signed -= np.quantile(signed, 1.0 - rng.uniform(0.28, 0.45))
    inside = (signed > 0).astype(np.float32)
    # A hard shadow still has a penumbra of a pixel or two (the lamp is not a point).
    inside = cv2.GaussianBlur(inside, (0, 0), sigmaX=rng.uniform(0.8, 2.0))
    return 1.0 - (1.0 - scene.hard_shadow) * inside, signed


def _ruler_beside(darkness: np.ndarray, signed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws a straight pencil line 8–25 px from the shadow's edge, along most of it; returns its pixels."""
    h, w = darkness.shape
    # The edge's direction from the signed distance's gradient, a point on it from the zero crossing.
    gy, gx = np.gradient(signed)
    normal = np.array([np.median(gx), np.median(gy)], np.float32)
    normal /= np.linalg.norm(normal)
    on_edge = np.argwhere(np.abs(signed) < 0.5)
    centre = on_edge[len(on_edge) // 2][::-1].astype(np.float32)
    centre += normal * np.float32(rng.choice([-1, 1]) * rng.uniform(8, 25))
    tangent = np.array([-normal[1], normal[0]], np.float32)
    half = 0.3 * np.hypot(w, h)
    return _ruled_stroke(darkness, centre - half * tangent, centre + half * tangent, rng)


def _ruled_stroke(darkness: np.ndarray, start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws one even, ruler-straight pencil line into `darkness`; returns its pixels."""
    line = np.zeros(darkness.shape, np.uint8)
    cv2.line(line, tuple(int(v) for v in np.round(start)), tuple(int(v) for v in np.round(end)), 1,
             thickness=int(rng.integers(1, 3)))
    line = line.astype(bool)
    darkness[line] = np.maximum(darkness[line], rng.uniform(0.5, 0.8))
    return line


def _ruler_frame(darkness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws a ruled frame 12–20 px inside the sheet's border (many drawings have one); returns its pixels."""
    h, w = darkness.shape
    inset = int(rng.integers(12, 21))
    corners = [np.array(c, np.float32) for c in ((inset, inset), (w - 1 - inset, inset),
                                                 (w - 1 - inset, h - 1 - inset), (inset, h - 1 - inset))]
    ruler = np.zeros((h, w), bool)
    for a, b in zip(corners, corners[1:] + corners[:1]):
        ruler |= _ruled_stroke(darkness, a, b, rng)
    return ruler


# Photos that are not simply the page: the sheet on a table (turned, in perspective, the table's
# edge in view), a hard cast shadow across the page with a straight or bowed edge, and both.
_STAGED: list[tuple[str, Degradation, Scene]] = [
    ("astronaut", Degradation("white", 0.80, 1.00, 2.5, 0.9, 75), Scene("oak", 4.0, 0.03, False, 1.0, 0.0, True)),
    ("camera", Degradation("offwhite", 0.70, 0.70, 3.0, 0.8, 70), Scene("walnut", -7.0, 0.05, True, 1.0, 0.0, True)),
    ("hand", Degradation("ruled", 0.75, 1.00, 2.5, 0.9, 80), Scene("grey", 1.5, 0.02, True, 1.0, 0.0, False)),
    ("coffee", Degradation("white", 0.85, 1.00, 2.5, 0.8, 80), Scene(None, 0.0, 0.0, False, 0.50, 0.0, True)),
    ("chelsea", Degradation("yellowish", 0.75, 1.00, 3.0, 0.9, 70), Scene(None, 0.0, 0.0, False, 0.60, 0.03, True)),
    ("coins", Degradation("ruled", 0.80, 1.00, 2.5, 0.9, 75), Scene(None, 0.0, 0.0, False, 0.55, -0.02, True)),
    ("rocket", Degradation("offwhite", 0.80, 1.00, 2.0, 0.9, 75), Scene("oak", -3.0, 0.03, False, 0.60, 0.015, True)),
]


def _scene_tag(scene: Scene) -> str:
    """A short name for a scene: the table (or "page") and the kind of hard shadow, e.g. "oak+shadow"."""
    parts = [scene.table + ("+edge" if scene.table_edge else "")] if scene.table else ["page"]
    if scene.hard_shadow < 1.0:
        parts.append("bowed-shadow" if scene.bow else "shadow")
    return "+".join(parts)


def staged_sketches(seed: int = 0) -> list[StagedSketch]:
    """Phone photos of pencil drawings on a table and/or under a hard cast shadow, each with its truth."""
    rng = np.random.default_rng(1000 + seed)
    sources = _sources()
    out = []
    for index, (source, how, scene) in enumerate(_STAGED):
        truth, darkness = _hand_drawing(rng) if source == "hand" else _edge_drawing(sources[source], rng)
        h, w = darkness.shape
        if scene.table:
            frame, corners = _placement((w, h), rng, scene)
        else:
            frame, corners = (w, h), np.array([(0, 0), (w - 1, 0), (w - 1, h - 1), (0, h - 1)], np.float32)
        shadow, signed = _hard_shadow(frame, rng, scene) if scene.hard_shadow < 1.0 else (None, None)
        if scene.ruler and signed is not None and not scene.table:
            ruler = _ruler_beside(darkness, signed, rng)
        elif scene.ruler:
            ruler = _ruler_frame(darkness, rng)
        else:
            ruler = np.zeros((h, w), bool)
        truth = truth | ruler
        reflectance = _sheet(darkness, how, rng, rules=how.paper == "ruled")
        sheet = np.ones((h, w), bool)
        if scene.table:
            # The sheet goes onto the table through a perspective warp; its truth goes the same way.
            source_corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float32)
            warp = cv2.getPerspectiveTransform(source_corners, corners)

            def placed(layer: np.ndarray) -> np.ndarray:
                return cv2.warpPerspective(layer.astype(np.float32), warp, frame, flags=cv2.INTER_LINEAR)

            cover = placed(np.ones((h, w), np.float32))
            table = _table(scene.table, (frame[1], frame[0]), rng, scene.table_edge)
            reflectance = table * (1.0 - cover[..., None]) + placed(reflectance)
            # A 1-px line keeps at least a quarter of its weight at every warped pixel it crosses.
            truth, ruler = placed(truth) > 0.25, placed(ruler) > 0.25
            sheet = cover > 0.5
        photo = _expose(reflectance, how, rng, shadow)
        edge = np.abs(signed) <= 3.0 if signed is not None else np.zeros(truth.shape, bool)
        name = f"{len(_PLAN) + index:02d}-{source}-{how.paper}-{_scene_tag(scene)}"
        out.append(StagedSketch(name, truth, photo, sheet, corners, edge, ruler))
    return out


def blank_ruled_page(seed: int = 0, size: tuple[int, int] = (DRAWING_SIDE, 675)) -> Image.Image:
    """A photo of an empty ruled notebook page, with a shadow: cleaned up, it should have no strokes."""
    rng = np.random.default_rng(seed)
    w, h = size
    return _photograph(np.zeros((h, w), np.float32), Degradation("ruled", 0.7, 0.6, 3.0, 0.9, 70), rng, rules=True)


def crayon_drawing(seed: int = 0, size: tuple[int, int] = (DRAWING_SIDE, 675)) -> Image.Image:
    """A photo of a child's crayon drawing: big areas filled with strong colours, a few outlines."""
    rng = np.random.default_rng(seed)
    w, h = size
    canvas = np.full((h, w, 3), 245, np.uint8)
    colours = [(220, 40, 40), (40, 90, 220), (250, 200, 30), (40, 170, 60), (240, 120, 30), (150, 60, 180)]
    cv2.rectangle(canvas, (0, int(h * 0.7)), (w, h), colours[3], -1)  # grass
    cv2.rectangle(canvas, (0, 0), (w, int(h * 0.25)), colours[1], -1)  # sky
    cv2.circle(canvas, (int(w * 0.8), int(h * 0.15)), int(h * 0.1), colours[2], -1)  # sun
    cv2.rectangle(canvas, (int(w * 0.2), int(h * 0.4)), (int(w * 0.55), int(h * 0.75)), colours[0], -1)  # house
    roof = np.array([(int(w * 0.17), int(h * 0.4)), (int(w * 0.375), int(h * 0.22)), (int(w * 0.58), int(h * 0.4))])
    cv2.fillPoly(canvas, [roof], colours[5])
    cv2.rectangle(canvas, (int(w * 0.33), int(h * 0.55)), (int(w * 0.42), int(h * 0.75)), colours[4], -1)  # door
    cv2.polylines(canvas, [roof], True, (30, 30, 30), 3)
    # Crayon texture: the wax skips over the paper grain, so fills are streaky, not flat.
    streaks = rng.random((h, w)) < 0.12
    canvas[streaks] = (0.5 * canvas[streaks] + 0.5 * 245).astype(np.uint8)
    darkness = np.zeros((h, w), np.float32)
    base = _photograph(darkness, Degradation("white", 0.75, 0.7, 2.5, 0.9, 75), rng, rules=False)
    # The photo's light (gradient, shadow, noise) applied to the crayon colours by multiplication.
    lit = np.asarray(base, np.float32) / np.array(PAPERS["white"], np.float32)
    photo = np.clip(canvas.astype(np.float32) * lit, 0, 255).astype(np.uint8)
    return Image.fromarray(photo, "RGB")


def _within(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels no farther than `tolerance` (Euclidean) from a True pixel of `mask`."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= tolerance


def _same_size(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """A mask computed at another scale, brought to the truth's resolution by nearest neighbour."""
    found = np.asarray(found, bool)
    if found.shape == truth.shape:
        return found
    resized = cv2.resize(found.astype(np.uint8), (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


def stroke_recall(truth: np.ndarray, found: np.ndarray, tolerance: float = 2) -> float:
    """Share of truth stroke pixels that have a found stroke pixel within `tolerance` px."""
    found = _same_size(found, truth)
    if not truth.any():
        return 1.0
    return float(_within(found, tolerance)[truth].mean())


def false_positive_rate(truth: np.ndarray, found: np.ndarray, tolerance: float = 2) -> float:
    """Share of background pixels (farther than `tolerance` from any truth stroke) marked as stroke."""
    found = _same_size(found, truth)
    background = ~_within(truth, tolerance)
    return float(found[background].mean()) if background.any() else 0.0


