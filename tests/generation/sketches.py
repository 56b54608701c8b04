"""Phone photos of pencil sketches with known strokes, and the metrics that score a stroke mask.

Shared by tests/generation/test_scribble.py and benchmarks/sketch_cleanup.py. The drawings come
from photographs shipped inside scikit-image (nothing is downloaded) turned into line drawings by
Canny edges, plus one hand-drawn-looking scribble with varying pencil pressure; each is then
"photographed": coloured or ruled paper, a lighting gradient, a soft shadow, paper texture, sensor
noise, a slight blur and JPEG compression. The truth mask is every pixel the pencil touched, at the
photo's own resolution.
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


def _photograph(darkness: np.ndarray, how: Degradation, rng: np.random.Generator,
                rules: bool) -> Image.Image:
    """Pencil darkness on paper, lit, shadowed, noised, blurred and JPEG-compressed like a phone photo."""
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
    image = paper * (1.0 - darkness * pencil)[..., None]
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
    image *= light[..., None]
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=how.blur)
    image += rng.normal(0, how.noise / 255.0, image.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=how.quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


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


