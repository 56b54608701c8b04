"""Training a pix2pix edges→photo generator on a folder of someone's photos, between other people's jobs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.params.base import JobParams, Range, register
from storage.records import RunInfo

EPOCHS = Range("epochs", 1, 10_000)  # the trainer needs one at the full rate
DECAY_EPOCHS = Range("decay_epochs", 0, 10_000)
ITERATIONS = Range("iterations", 0, 10_000_000)  # 0: every epoch
NGF = Range("ngf", 4, 128)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "1–64 letters, digits, - or _ (starting with a letter or digit)"


@register
@dataclass(frozen=True, kw_only=True)
class TrainParams(JobParams):
    """pix2pix (unet_256 generator, 70×70 PatchGAN) trained on the line drawings of the photos in `photos`,
    `epochs` at a constant learning rate then `decay_epochs` decaying to 0 (or only the first `iterations`),
    from `seed`; the generator is saved as the model called `name`. It is trained in turns between other
    people's jobs, each a few seconds long, and resumes from its checkpoint after a restart."""

    kind: Literal["train"] = "train"
    name: str
    photos: str  # the folder of photos, as an absolute path
    size: Literal[256] = 256
    epochs: int = 100
    decay_epochs: int = 100
    iterations: int = 0
    method: Literal["canny", "xdog"] = "canny"
    ngf: int = 64  # the generator's (and discriminator's) base width; 64 is pix2pix's, less trains faster

    RANGES: ClassVar[dict[str, Range]] = {"seed": JobParams.RANGES["seed"], "epochs": EPOCHS,
                                          "decay_epochs": DECAY_EPOCHS, "iterations": ITERATIONS, "ngf": NGF}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = frozenset()
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {
        "*": "job #{job} trained a pix2pix model; start a new one with /train (the same name resumes it)"}
    LABEL: ClassVar[str] = "pix2pix training"
    RERUNNABLE: ClassVar[bool] = False  # its "picture" is a model: training it again is /train's to ask
    BACKGROUND: ClassVar[bool] = True  # hours long: anyone's picture, its owner's too, goes before its next slice

    def title(self) -> str:
        return f"pix2pix model {self.name!r}"

    def summary(self) -> list[str]:
        plan = f"{self.iterations} iterations" if self.iterations else f"{self.epochs}+{self.decay_epochs} epochs"
        return [plan, f"{self.method} edges", f"ngf {self.ngf}"]

    def infotext(self, seed: int, run: RunInfo | None) -> tuple[list[str], list[tuple[str, object]]]:
        fields: list[tuple[str, object]] = [
            ("Seed", seed), ("Model", self.name), ("Epochs", self.epochs), ("Decay epochs", self.decay_epochs),
            ("Edges", self.method), ("Generator", f"pix2pix unet_256, ngf {self.ngf}"),
        ]
        if self.iterations:
            fields.insert(2, ("Iterations", self.iterations))
        return [f"pix2pix training of {self.name!r} on {self.photos}"], fields
