"""Animations: a strength sweep, a zoom-feedback loop or a clip redrawn frame by frame, each frame an ordinary
text→image or image→image drawing whose settings are written down here, so every frame can be redrawn alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import plain_number
from storage.params.base import JobParams, Range, register
from storage.params.diffusion import DiffusionParams
from storage.params.img2img import STRENGTH, Img2ImgParams
from storage.params.sketch import CONTROL_SCALE
from storage.params.txt2img import Txt2ImgParams
from storage.records import RunInfo

Mode = Literal["sweep", "zoom", "video"]

FRAMES = Range("frames", 1, limit="max_frames")
FPS = Range("fps", 1, 60)
SWEEP_END = Range("strength", 0, 1, above_low=True)
ZOOM = Range("zoom", 1, 2)  # per frame; 1: no zoom (a rotation or a shift alone); --reverse plays it outwards
ROTATE = Range("rotate", -45, 45)  # degrees per frame
SHIFT = Range("shift", -256, 256)  # pixels per frame


@register
@dataclass(frozen=True, kw_only=True)
class AnimateParams(DiffusionParams):
    """`frames` pictures played at `fps`, drawn one after another. Frame k is:

    - sweep: image→image of the input at strength_from + (strength_to − strength_from)·k/(frames − 1), same seed;
    - zoom: frame 0 drawn by text→image (or the input itself); frame k ≥ 1 image→image at `strength` of frame k−1
      moved (zoomed by `zoom`, turned by `rotate`°, shifted by `shift_x`, `shift_y` px about its centre) and, with
      `colour`, matched to frame 0's colours; seed + k unless `fixed_seed`. `reverse` plays the frames backwards;
    - video: image→image of the clip's frame k at `strength` with the one seed (a ControlNet on its edges at
      `control_scale`, when set).
    """

    kind: Literal["animate"] = "animate"
    mode: Mode
    frames: int
    fps: float = 12
    strength: float = 0.5  # zoom and video
    strength_from: float = 0.2  # sweep
    strength_to: float = 1.0
    zoom: float = 1.0
    rotate: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    reverse: bool = False
    fixed_seed: bool = False
    colour: bool = True
    control_scale: float | None = None  # video: the sketch ControlNet on each frame's edges, this strongly
    input_sha256: str = ""  # sweep, and a zoom that starts from a picture
    frame_inputs: tuple[str, ...] = ()  # video: the clip's frames as decoded at `fps`, kept like uploads
    clip_sha256: str = ""  # video: the clip as it was sent

    RANGES: ClassVar[dict[str, Range]] = {
        **DiffusionParams.RANGES, "frames": FRAMES, "fps": FPS, "strength": STRENGTH, "strength_from": SWEEP_END,
        "strength_to": SWEEP_END, "zoom": ZOOM, "rotate": ROTATE, "shift_x": SHIFT, "shift_y": SHIFT,
        "control_scale": CONTROL_SCALE}
    # Size and count are the animation's; frames and the motion are what it is. A rerun redraws the same frames
    # with other steps, guidance, seed, strength or at another frame rate.
    RERUN_SETTINGS: ClassVar[frozenset[str]] = frozenset({
        "seed", "negative_prompt", "steps", "cfg", "scheduler", "model", "strength", "fps"})
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {"*": "a rerun of animation #{job} keeps its frames, size and motion; "
                                                     "start a new /animate to change them"}
    LABEL: ClassVar[str] = "animation"

    def rerun_refusal(self, setting: str, value: object, job_id: int) -> str | None:
        if value != getattr(self, setting, None):
            if setting == "fps" and self.mode == "video":
                return (f"animation #{job_id}'s frames were taken from its clip at {plain_number(self.fps)} fps; "
                        "send the clip again with --fps to change it")
            if setting == "strength" and self.mode == "sweep":
                return "a sweep's strengths are --from and --to; start a new /animate to change them"
        return super().rerun_refusal(setting, value, job_id)

    @property
    def slices(self) -> int:
        return self.frames

    @property
    def effective_steps(self) -> int:
        """The steps of the frame that takes most (progress counts per frame)."""
        return max(self.frame_params(k).effective_steps for k in {0, self.frames - 1})

    @property
    def inputs(self) -> tuple[str, ...]:
        if self.mode == "video":
            return self.frame_inputs
        return (self.input_sha256,) if self.input_sha256 else ()

    @property
    def starts_from_picture(self) -> bool:
        return self.mode == "zoom" and bool(self.input_sha256)

    def frame_seed(self, k: int) -> int:
        return self.seed + k if self.mode == "zoom" and not self.fixed_seed else self.seed

    def frame_strength(self, k: int) -> float:
        if self.mode != "sweep":
            return self.strength
        if self.frames == 1:
            return self.strength_from
        # Rounded to what people type: frame k's infotext then reads as the /imagine --strength that redraws it.
        return round(self.strength_from + (self.strength_to - self.strength_from) * k / (self.frames - 1), 4)

    def frame_params(self, k: int) -> JobParams:
        """What frame k (in drawing order) is drawn as: the /imagine job that draws the same picture from the same
        input. A zoom's frame 0 from a picture is that picture: these params then only describe it."""
        base = dict(prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.frame_seed(k), count=1,
                    steps=self.steps, cfg=self.cfg, width=self.width, height=self.height, scheduler=self.scheduler,
                    vae_tiling=self.vae_tiling, model=self.model)
        if self.mode == "zoom" and k == 0:
            return self if self.starts_from_picture else Txt2ImgParams(**base)
        clip = self.frame_inputs[k] if k < len(self.frame_inputs) else ""  # (none yet while a new job is checked)
        source = clip if self.mode == "video" else self.input_sha256 if self.mode == "sweep" else ""
        return Img2ImgParams(**base, strength=self.frame_strength(k), input_sha256=source)

    def order(self, count: int) -> list[int]:
        """The drawn frames (0…count−1, drawing order) in the order they play."""
        return list(range(count))[::-1] if self.reverse else list(range(count))

    def for_image(self, index: int, count: int) -> JobParams:
        return self.frame_params(self.order(count)[index])

    def image_fields(self, index: int, count: int) -> list[tuple[str, object]]:
        return [("Animation", self.mode), ("Frame", f"{self.order(count)[index] + 1} of {self.frames}"),
                ("FPS", plain_number(self.fps))]

    def motion(self) -> str:
        """A zoom loop's move per frame in words: "zoom 1.04, rotate 2°, shift 4,0"."""
        parts = [f"zoom {plain_number(self.zoom)}"] if self.zoom != 1 else []
        if self.rotate:
            parts.append(f"rotate {plain_number(self.rotate)}°")
        if self.shift_x or self.shift_y:
            parts.append(f"shift {plain_number(self.shift_x)},{plain_number(self.shift_y)}")
        return ", ".join(parts) or "still"

    def summary(self) -> list[str]:
        what = {"sweep": f"strength {plain_number(self.strength_from)}→{plain_number(self.strength_to)}",
                "zoom": self.motion() + (", out" if self.reverse else ""),
                "video": f"strength {plain_number(self.strength)}"}[self.mode]
        return [f"{self.mode} of {self.frames} frames at {plain_number(self.fps)} fps", what, *super().summary()]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        return [("Animation", self.mode), ("Frames", self.frames), ("FPS", plain_number(self.fps))]
