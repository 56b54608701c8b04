"""The Stable Diffusion settings every diffusion kind shares, and the infotext fields they write alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from storage.infotext import SAMPLER_NAMES, model_name, plain_number
from storage.params.base import CFG, STEPS, JobParams, Range
from storage.records import JobRecord, JobStatus, RunInfo

# Control characters (ESC, NUL, BEL…) mean nothing to a text encoder, can rewrite a terminal that
# prints them, and NUL cannot go into a PNG text chunk; newlines stay (A1111 prompts have them).
# Bidirectional overrides and isolates (U+202A–202E, U+2066–2069), the invisible marks (U+061C,
# U+200E/F) and zero-width characters (U+200B–200D, U+2060, U+FEFF) draw nothing either, but make a
# caption or /history line read as something else than what was asked: gone too.
_CONTROLS = (dict.fromkeys([*range(0, 9), *range(11, 32), *range(127, 160)]) | {9: " "}
             | dict.fromkeys([0x061C, *range(0x200B, 0x2010), *range(0x202A, 0x202F), 0x2060,
                              *range(0x2066, 0x206A), 0xFEFF]))


@dataclass(frozen=True, kw_only=True)
class DiffusionParams(JobParams):
    """A prompt drawn by Stable Diffusion: steps, guidance, size and scheduler."""

    prompt: str
    negative_prompt: str = ""
    steps: int
    cfg: float
    width: int
    height: int
    scheduler: str
    # Whether the VAE decodes in tiles (which changes the pixels): None lets the engine decide, and
    # the engine records what it did so a rerun can ask for the same.
    vae_tiling: bool | None = None
    # The configured model it draws with, by name ([models.<name>], or "default"); "" in jobs from before
    # the model library, which drew with [generation] model.
    model: str = ""

    RANGES: ClassVar[dict[str, Range]] = {**JobParams.RANGES, "steps": STEPS, "cfg": CFG}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = JobParams.RERUN_SETTINGS | {
        "negative_prompt", "steps", "cfg", "width", "height", "scheduler", "model"}
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {
        "psi": "psi and layers are for /face",
        "layers": "psi and layers are for /face",
        # Each mode sees the drawing cleaned its own way: that needs the drawing, not a job's control image.
        "mode": "a rerun keeps its mode; send the drawing again with /sketch --mode …",
        "strength": "strength is for image→image; job #{job} had no input image",
        "control_scale": "control is for /sketch; job #{job} had no drawing",
    }

    def __post_init__(self) -> None:
        # Stored, shown and drawn without control characters, however the prompt arrived (see _CONTROLS).
        object.__setattr__(self, "prompt", self.prompt.translate(_CONTROLS))
        object.__setattr__(self, "negative_prompt", self.negative_prompt.translate(_CONTROLS))

    @property
    def effective_steps(self) -> int:
        return self.steps

    @property
    def has_steps(self) -> bool:
        return True

    def title(self) -> str:
        return self.prompt

    def rerun_of(self, parent: JobRecord) -> Self:
        """At the parent's size the VAE tiles exactly as the parent's did, so the pixels match; at another
        size the engine decides afresh."""
        old = parent.params
        if not isinstance(old, DiffusionParams) or (self.width, self.height) != (old.width, old.height):
            return self.replace(vae_tiling=None)
        if parent.status is JobStatus.DONE and parent.run is not None:
            return self.replace(vae_tiling=parent.run.vae_tiling)
        return self.replace(vae_tiling=old.vae_tiling)

    def summary(self) -> list[str]:
        return [f"{self.steps} steps", f"cfg {plain_number(self.cfg)}", f"{self.width}x{self.height}"]

    def infotext(self, seed: int, run: RunInfo | None) -> tuple[list[str], list[tuple[str, object]]]:
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        sampler, schedule = SAMPLER_NAMES.get(self.scheduler, (self.scheduler, None))
        fields: list[tuple[str, object]] = [
            ("Steps", self.steps),
            ("Sampler", sampler),
            ("Schedule type", schedule),
            ("CFG scale", plain_number(self.cfg)),
            ("Seed", seed),
            ("Size", f"{self.width}x{self.height}"),
        ]
        if run is not None:
            if run.model_hash:
                fields.append(("Model hash", run.model_hash[:10]))
            fields.append(("Model", self.model or model_name(run.model)))
        fields += self.infotext_extra(run)
        if run is not None:  # A1111 writes them after the kind's own fields
            fields += [("Lora hashes", run.loras), ("TI hashes", run.embeddings)]
        # Our initial noise comes from a CPU torch.Generator per image; A1111 defaults to GPU noise.
        fields.append(("RNG", "CPU"))
        return lines, fields

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        """The kind's own fields, written after the model's (A1111 writes them in that order)."""
        return []
