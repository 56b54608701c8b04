"""A StyleGAN2 face of someone who does not exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import model_name, plain_number
from storage.params.base import JobParams, Range, register
from storage.records import RunInfo

PSI = Range("psi", -1, 2)  # truncation: 0 = the average face, 1 = full variety
MOVE = Range("move", -20, 20)  # how far one edit moves along its direction
MAX_MOVES = 16


@register
@dataclass(frozen=True, kw_only=True)
class FaceParams(JobParams):
    """A StyleGAN2 face: z from the seed as NVIDIA's tools make it, truncated towards the average face by
    psi; optionally the styles of `layers` taken from `mix_seed`, and moves along latent directions."""

    kind: Literal["face"] = "face"
    psi: float = 0.7
    mix_seed: int | None = None
    layers: str = "coarse"  # coarse, middle, fine or FROM-TO: which styles come from mix_seed
    edits: tuple[tuple[str, float], ...] = ()  # (direction, amount): "dir0" (found in the weights) or a named one

    RANGES: ClassVar[dict[str, Range]] = {**JobParams.RANGES, "psi": PSI}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = JobParams.RERUN_SETTINGS | {"psi", "layers"}
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {"*": "job #{job} is a face; /rerun takes seed, n, psi (and layers for a mix)"}
    LABEL: ClassVar[str] = "face"

    @property
    def effective_steps(self) -> int:
        return self.count  # the face engine reports one step per face

    def title(self) -> str:
        return "a face (StyleGAN2)"

    def summary(self) -> list[str]:
        parts = [f"ψ {plain_number(self.psi)}"]
        if self.mix_seed is not None:
            parts.append(f"mixed with {self.mix_seed} ({self.layers})")
        return parts + [f"{name} {amount:+g}" for name, amount in self.edits]

    def infotext(self, seed: int, run: RunInfo | None) -> tuple[list[str], list[tuple[str, object]]]:
        # Not an A1111 picture, but the same shape, so metadata readers still show what made it.
        fields: list[tuple[str, object]] = [("Seed", seed), ("Truncation psi", plain_number(self.psi))]
        if self.mix_seed is not None:
            fields += [("Mix seed", self.mix_seed), ("Mix layers", self.layers)]
        if self.edits:
            fields.append(("Edits", " ".join(f"{name}={plain_number(amount)}" for name, amount in self.edits)))
        if run is not None:
            fields.append(("Model", model_name(run.model)))
        fields += [("Generator", "StyleGAN2"), ("Noise mode", "const"), ("RNG", "NumPy RandomState")]
        return ["a face of someone who does not exist"], fields
