"""A drawing → a photo-like image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import model_name, plain_number
from storage.params.base import Range, register
from storage.params.diffusion import DiffusionParams
from storage.records import RunInfo

SketchMode = Literal["scribble", "pix2pix"]
CONTROL_SCALE = Range("control", 0, 2)  # how strongly the drawing steers


@register
@dataclass(frozen=True, kw_only=True)
class SketchParams(DiffusionParams):
    """A drawing → a photo-like image: Stable Diffusion steered by a ControlNet through the cleaned drawing
    (scribble), or a pix2pix edges→photo generator. The cleaned control image is kept with the job."""

    kind: Literal["sketch"] = "sketch"
    mode: SketchMode = "scribble"
    control_scale: float = 1.0  # how strongly the drawing steers (A1111's ControlNet "Weight")
    guidance_start: float = 0.0  # the share of the steps before the ControlNet starts steering
    guidance_end: float = 1.0  # … and after which it stops
    pix2pix: str = ""  # mode pix2pix: the name of a model trained here; "" = the [sketch] pix2pix file
    input_sha256: str  # the photo as sent
    control_sha256: str  # what the model saw: white lines on black (scribble) or dark on white (pix2pix)

    RANGES: ClassVar[dict[str, Range]] = {**DiffusionParams.RANGES, "control_scale": CONTROL_SCALE}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = DiffusionParams.RERUN_SETTINGS | {"control_scale"}
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {
        key: text for key, text in DiffusionParams.RERUN_REFUSALS.items() if key != "control_scale"}
    LABEL: ClassVar[str] = "sketch job"

    @property
    def effective_steps(self) -> int:
        return 1 if self.mode == "pix2pix" else self.steps

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.control_sha256,)

    @property
    def shown_inputs(self) -> tuple[tuple[str, str], ...]:
        return (("control image", self.control_sha256),)

    def summary(self) -> list[str]:
        mode = f"{self.mode} {plain_number(self.control_scale)}" if self.mode == "scribble" else self.mode
        if self.pix2pix:
            mode += f" {self.pix2pix}"
        return [*super().summary(), mode]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        if self.mode != "scribble":
            return []
        # As A1111's ControlNet extension writes a unit: our drawing clean-up is done before, so no module.
        controlnet = model_name(run.controlnet) if run is not None and run.controlnet else "unknown"
        return [("ControlNet 0", f"Module: none, Model: {controlnet}, Weight: {plain_number(self.control_scale)}, "
                                 f"Resize Mode: Just Resize, Guidance Start: {plain_number(self.guidance_start)}, "
                                 f"Guidance End: {plain_number(self.guidance_end)}, Control Mode: Balanced")]
