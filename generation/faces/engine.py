"""The face engine: StyleGAN2 faces on the queue's GPU thread, loaded lazily, beside Stable Diffusion."""

from __future__ import annotations

import logging
from pathlib import Path

import diffusers
import numpy as np
import torch
from PIL import Image

from generation.config import FacesConfig
from generation.engine import EngineResult, JobCancelled, ModelLoadError, Progress, check_job
from storage.errors import EaselError
from storage.records import RunInfo
from storage.params import FaceParams

log = logging.getLogger(__name__)

SEFA_COUNT = 10  # dir0 … dir9


def layer_range(layers: str, num_ws: int) -> range:
    """The w layers that `layers` names: a band of style_bands (coarse, middle, fine) or "FROM-TO", inclusive."""
    from generation.faces.stylegan2 import style_bands

    low, dash, high = layers.partition("-")
    if not dash:
        return style_bands(num_ws)[layers]
    if int(high) >= num_ws:
        raise EaselError(f"layers {layers} go past this generator's {num_ws} layers (0-{num_ws - 1})")
    return range(int(low), int(high) + 1)


class FaceEngine:
    """Draws FaceParams jobs with the StyleGAN2 generator in [faces] checkpoint."""

    KINDS = ("face",)  # the job kinds this engine draws

    def __init__(self, config: FacesConfig, device: str = "cpu") -> None:
        self.config = config
        self.device_name = device
        self._generator = None
        self._device: torch.device | None = None
        self._directions: dict[str, np.ndarray] = {}

    def unavailable(self) -> str | None:
        if not self.config.checkpoint:
            return "no StyleGAN2 checkpoint is set up: set [faces] checkpoint to a stylegan2-ada-pytorch .pkl"
        return None

    def _load(self):
        if self._generator is not None:
            return self._generator
        from generation.diffusion import pick_device
        from generation.faces.checkpoint import read_generator
        from generation.faces.stylegan2 import Generator, sefa_directions

        path = Path(self.config.checkpoint).expanduser()
        init_kwargs, state = read_generator(path)  # reads tensors only; nothing in the file runs
        try:
            generator = Generator(**init_kwargs)
            generator.load_state_dict(state, strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path.name} does not fit easel's StyleGAN2 generator: {first}") from exc
        self._device = pick_device(self.device_name)
        generator = generator.eval().requires_grad_(False).to(self._device)
        directions = {f"dir{k}": vector for k, vector in enumerate(sefa_directions(generator, SEFA_COUNT))}
        for name, file in self.config.directions.items():
            vector = np.load(Path(file).expanduser(), allow_pickle=False).astype(np.float32).reshape(-1)
            if vector.shape[0] != generator.w_dim:
                raise ModelLoadError(f"direction {name!r} ({file}) has {vector.shape[0]} values; w has {generator.w_dim}")
            directions[name.lower()] = vector
        self._generator, self._directions = generator, directions
        log.info("loaded StyleGAN2 %s: %d px, %d layers", path.name, generator.img_resolution, generator.num_ws)
        return generator

    def run(self, params: FaceParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """One face per seed (s, s+1, …), each as NVIDIA's generate.py would draw it; raises JobCancelled if
        cancelled before the last face is done."""
        from generation.faces.stylegan2 import edit, mix, to_uint8, z_for_seed

        check_job(params, inputs, self.KINDS)
        if progress.cancelled:
            raise JobCancelled("cancelled before it started")
        generator = self._load()
        images = []
        with torch.inference_mode():
            for seed in params.seeds:
                # Before each face (the first one waits for a load), and again before synthesis, the costly half.
                if progress.cancelled:
                    raise JobCancelled("cancelled while running")
                ws = self._styles(generator, z_for_seed(seed, generator.z_dim), params.psi)
                if params.mix_seed is not None:
                    other = self._styles(generator, z_for_seed(params.mix_seed, generator.z_dim), params.psi)
                    ws = mix(ws, other, layer_range(params.layers, generator.num_ws))
                for name, amount in params.edits:
                    if name not in self._directions:
                        raise EaselError(f"no direction {name!r}; this generator has {', '.join(self._directions)}")
                    ws = edit(ws, torch.from_numpy(self._directions[name]).to(ws), amount)
                if progress.cancelled:
                    raise JobCancelled("cancelled while running")
                picture = generator.synthesis(ws, noise_mode="const")
                images.append(Image.fromarray(to_uint8(picture), "RGB"))
                # A cancel that arrives with the last face done is too late to save any work: keep the faces.
                progress.step(len(images), len(params.seeds), None)
        return EngineResult(images=tuple(images), seeds=params.seeds, run=self.run_info())

    def _styles(self, generator, z: torch.Tensor, psi: float) -> torch.Tensor:
        return generator.mapping(z.to(self._device), None, truncation_psi=psi)

    def run_info(self) -> RunInfo | None:
        if self._generator is None:
            return None
        return RunInfo(
            model=self.config.checkpoint, model_hash=None, memory_profile="-", attention="-", dtype="float32",
            device=str(self._device), diffusers_version=diffusers.__version__, torch_version=torch.__version__,
        )
