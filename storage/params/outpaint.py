"""Zoom out and pan: a finished picture on a larger canvas, the new part drawn around it (outpainting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import plain_number
from storage.params.action import ActionParams
from storage.params.base import Range, register
from storage.records import RunInfo

FACTOR = Range("factor", 1, 2, above_low=True)
Direction = Literal["left", "right", "up", "down"]
Box = tuple[int, int, int, int]  # left, top, width, height of the original on the canvas


def _multiple_of_8(value: float) -> int:
    return max(8, round(value / 8) * 8)


def zoom_layout(size: tuple[int, int], factor: float) -> tuple[tuple[int, int], Box]:
    """(canvas size, the original's box on it): the canvas keeps the picture's size, the original shrunk in the middle."""
    width, height = size
    inner = (max(1, round(width / factor)), max(1, round(height / factor)))
    return size, ((width - inner[0]) // 2, (height - inner[1]) // 2, *inner)


def pan_layout(size: tuple[int, int], direction: str) -> tuple[tuple[int, int], Box]:
    """(canvas size, the original's box on it): half as large again (a multiple of 8) towards `direction`."""
    width, height = size
    sideways = direction in ("left", "right")
    grown = (width + _multiple_of_8(width / 2), height) if sideways else (width, height + _multiple_of_8(height / 2))
    left = grown[0] - width if direction == "left" else 0
    top = grown[1] - height if direction == "up" else 0
    return grown, (left, top, width, height)


@register
@dataclass(frozen=True, kw_only=True)
class ZoomParams(ActionParams):
    """Zoom out: image K of job N shrunk `factor` times in the middle of a canvas of its own size, the border
    drawn by the model, the middle kept as the original's pixels."""

    kind: Literal["zoom"] = "zoom"
    factor: float = 2.0

    RANGES: ClassVar[dict[str, Range]] = {**ActionParams.RANGES, "factor": FACTOR}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = ActionParams.RERUN_SETTINGS | {"factor"}
    LABEL: ClassVar[str] = "zoom out"

    def action(self) -> str:
        return f"zoom out {plain_number(self.factor)}×"

    def layout(self, size: tuple[int, int]) -> tuple[tuple[int, int], Box]:
        return zoom_layout(size, self.factor)

    def summary(self) -> list[str]:
        return [*super().summary(), f"zoom out {plain_number(self.factor)}×"]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        return [("Zoom out", plain_number(self.factor)), ("Outpainted from", f"#{self.source_job}")]


@register
@dataclass(frozen=True, kw_only=True)
class PanParams(ActionParams):
    """Pan: the canvas of image K of job N made half as large again towards `direction`, the new part drawn
    by the model, the original's pixels kept where they were."""

    kind: Literal["pan"] = "pan"
    direction: Direction

    LABEL: ClassVar[str] = "pan"

    def action(self) -> str:
        return f"pan {self.direction}"

    def layout(self, size: tuple[int, int]) -> tuple[tuple[int, int], Box]:
        return pan_layout(size, self.direction)

    def summary(self) -> list[str]:
        return [*super().summary(), f"pan {self.direction}"]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        return [("Pan", self.direction), ("Outpainted from", f"#{self.source_job}")]
