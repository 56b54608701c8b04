"""Ruled notebook lines: printed, page-wide and evenly spaced, so not part of the drawing."""

from __future__ import annotations

import cv2
import numpy as np

# Ruled notebook lines: horizontal runs at least RULE_RUN × width long which, with their gaps
# bridged, span RULE_SPAN of the width at a median thickness of at most RULE_THICK px; at least
# RULE_COUNT of them on a page. Found on a lower threshold (RULE_FLOOR / RULE_SIGMAS) than strokes.
RULE_RUN, RULE_SPAN, RULE_THICK = 1 / 24, 0.5, 6
RULE_FLOOR, RULE_SIGMAS = 0.04, 2.0
RULE_COUNT = 3


def ruled_lines(candidate: np.ndarray, darkness: np.ndarray, margin: float, at_least: int = RULE_COUNT) -> np.ndarray:
    """Pixels of ruled notebook lines (long, thin, near-horizontal, page-wide) that no stroke darkens."""
    h, w = candidate.shape
    horizontal, labels, stats, rule = _page_wide_lines(candidate)
    # A notebook page has many ruled lines; a single page-wide line is more likely a drawn horizon.
    if rule.sum() < at_least:
        return np.zeros((h, w), bool)
    if at_least > 1:
        rule = _on_even_grid(rule, labels, stats, h, at_least)
        if rule is None:
            return np.zeros((h, w), bool)
    lines = np.zeros((h, w), bool)
    for label in np.flatnonzero(rule):
        x, y, bw, bh = stats[label, :4]
        ys, xs = np.nonzero((labels[y:y + bh, x:x + bw] == label) & (horizontal[y:y + bh, x:x + bw] > 0))
        _mark_line(lines, darkness, xs + x, ys + y, margin)
    return lines


def _page_wide_lines(candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal runs, their bridged components (labels, stats), and which components are page-wide thin lines."""
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
    return horizontal, labels, stats, rule


def _on_even_grid(rule: np.ndarray, labels: np.ndarray, stats: np.ndarray, h: int, at_least: int) -> np.ndarray | None:
    """The lines of `rule` on the page's grid of rules, or None if the lines are not a notebook's."""
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
        return None
    # A line off that grid (its gaps to both neighbours not a whole number of spacings, where
    # a rule hidden under a drawing leaves a double gap) was drawn with a ruler: it stays.
    steps = gaps / spacing
    on_grid = (np.abs(steps - np.round(steps)) <= 0.2) & (np.round(steps) >= 1)
    kept = np.zeros(len(found), bool)
    kept[:-1] |= on_grid
    kept[1:] |= on_grid
    rule = rule.copy()
    rule[found[~kept]] = False
    return rule


def _mark_line(lines: np.ndarray, darkness: np.ndarray, xs: np.ndarray, ys: np.ndarray, margin: float) -> None:
    """Mark in `lines` the whole width of the ruled line through the pixels (xs, ys), but not the strokes over it."""
    h, w = lines.shape
    columns = np.arange(w)
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
