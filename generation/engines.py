"""The engine for each kind of job: a new kind's engine is one module and one line in ENGINES."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Protocol

from generation.config import ActionsConfig, FacesConfig, GenerationConfig, ModelsConfig, SketchConfig, \
    TrainingConfig, UpscaleConfig
from generation.engine import Engine


class DataFolder(Protocol):
    data_dir: Path


class EngineConfig(Protocol):
    """The sections of the config that engines read (the bot's Config is one)."""

    storage: DataFolder
    training: TrainingConfig
    generation: GenerationConfig
    models: ModelsConfig
    sketch: SketchConfig
    faces: FacesConfig
    upscale: UpscaleConfig
    actions: ActionsConfig


def _diffusion(config: EngineConfig) -> Engine:
    from generation.diffusion import DiffusionEngine  # torch and diffusers: imported when an engine is built

    return DiffusionEngine(config.generation, config.sketch, config.upscale, config.actions, config.models,
                           pix2pix_models=config.training.models_dir(config.storage.data_dir))


def _faces(config: EngineConfig) -> Engine:
    from generation.faces.engine import FaceEngine

    return FaceEngine(config.faces, config.generation.device)


def _training(config: EngineConfig) -> Engine:
    from generation.training.engine import TrainingEngine

    return TrainingEngine(config.training, config.training.models_dir(config.storage.data_dir),
                          config.generation.device)


# Kind → the factory of its engine. Kinds whose factory is the same function share one engine (and
# its weights): text→image, image→image and sketches all run on the one Stable Diffusion pipeline.
ENGINES: dict[str, Callable[[EngineConfig], Engine]] = {
    "txt2img": _diffusion,
    "img2img": _diffusion,
    "sketch": _diffusion,
    "face": _faces,
    "upscale": _diffusion,  # the enlarging network sits beside the model its second pass may use
    "vary": _diffusion,
    "zoom": _diffusion,
    "pan": _diffusion,
    "animate": _diffusion,  # each frame an image→image (or text→image) drawing on the same pipelines
    "train": _training,  # pix2pix's own two networks, beside whatever Stable Diffusion model is loaded
}


def build_engines(config: EngineConfig, kinds: Iterable[str] | None = None) -> dict[str, Engine]:
    """The engine for each kind (every kind, or the given ones); the weights load on the first job that needs them."""
    from generation.diffusion import pick_device

    pick_device(config.generation.device)  # device = "cuda" without a GPU: say so at start, not at the first job
    wanted = list(ENGINES) if kinds is None else list(kinds)
    built: dict[Callable, Engine] = {}
    engines = {}
    for kind in wanted:
        factory = ENGINES[kind]
        if factory not in built:
            built[factory] = factory(config)
        engines[kind] = built[factory]
    return engines
