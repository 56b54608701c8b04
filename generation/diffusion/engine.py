"""The Stable Diffusion engine: one set of weights, loaded on the first job, drawing every diffusion kind."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import diffusers
import torch
from diffusers import (StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline)
from PIL import Image

from generation.config import ActionsConfig, GenerationConfig, SketchConfig, UpscaleConfig
from generation.device import pick_device
from generation.diffusion.actions import canvas_and_mask, paste_back
from generation.diffusion.loading import controlnet_pipeline, load_controlnet, load_inpaint_unet, load_pipelines
from generation.diffusion.memory import MemoryPlan, needs_tiling
from generation.diffusion.offload import SharedOffload
from generation.diffusion.preview import latent_preview
from generation.engine import EngineResult, JobCancelled, ModelLoadError, Progress, check_job
from generation.prompts import encode_prompts
from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.params import DiffusionParams, SketchParams, Txt2ImgParams, UpscaleParams
from storage.records import RunInfo

log = logging.getLogger(__name__)


class _Stage:
    """One pass of a job with several (the hires fix, an upscale's redraw): its steps counted on from `offset`
    of `total` in all, so a progress bar runs once from 0 to 100%."""

    def __init__(self, progress: Progress, offset: int, total: int) -> None:
        self._progress, self._offset, self._total = progress, offset, total
        self.wants_preview = getattr(progress, "wants_preview", True)

    @property
    def cancelled(self) -> bool:
        return self._progress.cancelled

    def step(self, done: int, total: int, preview: Image.Image | None) -> None:
        self._progress.step(min(self._offset + done, self._total), self._total, preview)


def step_callback(progress: Progress, every: int):
    """diffusers' callback_on_step_end: progress (with a preview every `every` steps) and cancel between steps."""

    def on_step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        done = step + 1
        total = pipeline.num_timesteps
        preview = None
        if every and done % every == 0 and done < total:
            preview = latent_preview(tensors["latents"])
        progress.step(done, total, preview)
        # A cancel that arrives with the last step done is too late to save any work: keep the images.
        if progress.cancelled and done < total:
            pipeline._interrupt = True
        return tensors

    return on_step_end


class DiffusionEngine:
    """Loads the configured model on first use and runs txt2img, img2img and sketch jobs on it."""

    def __init__(self, config: GenerationConfig, sketch: SketchConfig | None = None,
                 upscale: UpscaleConfig | None = None, actions: ActionsConfig | None = None) -> None:
        self.config = config
        self.sketch = sketch or SketchConfig()
        self.upscale = upscale or UpscaleConfig()
        self.actions = actions or ActionsConfig()
        self._upscaler = None  # the [upscale] network, loaded on the first job that enlarges with it
        self._inpaint: StableDiffusionInpaintPipeline | None = None  # built on the first zoom or pan
        self._txt2img: StableDiffusionPipeline | None = None
        self._img2img: StableDiffusionImg2ImgPipeline | None = None
        self._controlled: StableDiffusionControlNetPipeline | None = None  # built on the first sketch job
        self._pix2pix = None  # the pix2pix generator, loaded on the first pix2pix job
        self._plan: MemoryPlan | None = None
        self._device: torch.device | None = None
        self._model_hash: str | None = None
        self._offload: SharedOffload | None = None  # hooks on the shared modules, installed once
        self._scheduler_config = None  # the model's own scheduler config, before any job's options
        self._owner_thread: int | None = None

    def load(self) -> None:
        """Load weights and apply the memory plan; a failure leaves the engine unloaded to retry later."""
        if self._txt2img is not None:
            return
        self._check_thread()
        loaded = load_pipelines(self.config)
        self._txt2img, self._img2img, self._plan, self._device, self._model_hash = loaded
        self._scheduler_config = loaded.txt2img.scheduler.config

    def _check_thread(self) -> None:
        # torch state belongs to one thread; a second caller is a bug in the queue, not a race to tolerate.
        ident = threading.get_ident()
        if self._owner_thread is None:
            self._owner_thread = ident
        elif self._owner_thread != ident:
            raise RuntimeError("DiffusionEngine used from two threads")

    def unavailable(self) -> str | None:
        return None  # [generation] model always names a model; a load failure is reported per job

    def run(self, params: DiffusionParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """Draw the images of one job; raises JobCancelled if cancelled while running."""
        check_job(params, inputs, self.KINDS)
        if progress.cancelled:
            raise JobCancelled("cancelled before it started")
        if params.kind == "upscale":  # a plain enlargement needs no Stable Diffusion weights at all
            return self._run_upscale(params, inputs, progress)
        self.load()
        if progress.cancelled:  # a load can take minutes (a first download); honour a cancel made meanwhile
            raise JobCancelled("cancelled while the model loaded")
        self._check_thread()
        if params.kind == "sketch" and params.mode == "pix2pix":
            return self._run_pix2pix(params, inputs, progress)
        hires = isinstance(params, Txt2ImgParams) and params.hires
        pipe, options = self._KIND_CALLS[params.kind](self, params, inputs)
        first = _Stage(progress, 0, params.effective_steps) if hires else progress
        images, tiling = self._draw(pipe, params, options, first)
        if params.kind in ("zoom", "pan"):  # the original's own pixels where it sits on the canvas
            box = params.layout(inputs[0].size)[1]
            images = tuple(paste_back(image, inputs[0], box) for image in images)
        if hires:
            images, tiling = self._hires(params, images, progress)
        run = dataclasses.replace(self.run_info(), vae_tiling=tiling, controlnet=self._steered_by(pipe))
        return EngineResult(images=images, seeds=params.seeds, run=run)

    def _steered_by(self, pipe) -> str | None:
        """What drew besides the model, for the record: the sketch's ControlNet, or a dedicated inpainting UNet."""
        if pipe is self._controlled:
            return self.sketch.controlnet
        if pipe is self._inpaint and pipe.unet is not self._txt2img.unet:
            return f"inpaint:{self.actions.inpaint_model}"
        return None

    def _draw(self, pipe, params: DiffusionParams, options: dict, progress: Progress,
              size: tuple[int, int] | None = None) -> tuple[tuple[Image.Image, ...], bool]:
        """One pipeline call for the job's seeds: its images, and whether the VAE decoded in tiles."""
        self._activate_offload(pipe)
        tiling = self._prepare(pipe, params, size)
        # Previews only when someone shows them: each one waits for the GPU to catch up.
        every = self.config.preview_every if getattr(progress, "wants_preview", True) else 0
        # One CPU generator per image: image k is reproducible alone and identical on any machine. (A list
        # of images, the hires fix's, pairs image k with generator k.)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in params.seeds]
        # A1111's prompt rules: emphasis like (word:1.2) and prompts past CLIP's 77 tokens, in chunks.
        prompt_embeds, negative_embeds = encode_prompts(
            pipe.tokenizer, pipe.text_encoder, params.prompt, params.negative_prompt,
            pipe._execution_device, getattr(torch, self._plan.dtype),
        )
        with torch.inference_mode():
            output = pipe(
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                num_inference_steps=params.steps, guidance_scale=params.cfg, num_images_per_prompt=params.count,
                generator=generators, callback_on_step_end=step_callback(progress, every), **options,
            )
        if pipe.interrupt:
            raise JobCancelled("cancelled while running")
        return tuple(output.images), tiling

    def _hires(self, params: Txt2ImgParams, drawn: tuple[Image.Image, ...], progress: Progress):
        """A1111's hires fix: each picture enlarged, then redrawn in part at the larger size with its own seed."""
        size = params.hires_size
        enlarged = [self._enlarge(image, size, params.hires_upscaler or "Lanczos", progress) for image in drawn]
        stage = _Stage(progress, params.steps, params.effective_steps)
        return self._draw(self._img2img, params, dict(image=enlarged, strength=params.hires_strength), stage, size)

    # ---- each kind: the pipeline that draws it, and what that pipeline takes besides the prompt ----------
    def _txt2img_call(self, params: DiffusionParams, inputs: tuple[Image.Image, ...]):
        return self._txt2img, dict(height=params.height, width=params.width)

    def _img2img_call(self, params: DiffusionParams, inputs: tuple[Image.Image, ...]):
        image = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
        return self._img2img, dict(image=image, strength=params.strength)

    def _sketch_call(self, params: SketchParams, inputs: tuple[Image.Image, ...]):
        pipe = self._controlnet_pipe()
        # The stored control image is already the job's size; NEAREST keeps its lines crisp if not.
        control = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.NEAREST)
        return pipe, dict(image=control, height=params.height, width=params.width,
                          controlnet_conditioning_scale=params.control_scale,
                          control_guidance_start=params.guidance_start, control_guidance_end=params.guidance_end)

    def _outpaint_call(self, params, inputs: tuple[Image.Image, ...]):
        """Zoom out and pan: the original on a larger canvas, the rest drawn from noise around it. The model's
        own UNet keeps the original's part by blending its latents in at every step (4-channel inpainting)."""
        canvas_size, box = params.layout(inputs[0].size)
        canvas, mask = canvas_and_mask(inputs[0], canvas_size, box)
        return self._inpaint_pipe(), dict(image=canvas, mask_image=mask, strength=1.0,
                                          width=canvas_size[0], height=canvas_size[1])

    _KIND_CALLS = {"txt2img": _txt2img_call, "img2img": _img2img_call, "sketch": _sketch_call,
                   "vary": _img2img_call, "zoom": _outpaint_call, "pan": _outpaint_call}
    KINDS = (*_KIND_CALLS, "upscale")  # the job kinds this engine draws

    def _inpaint_pipe(self) -> StableDiffusionInpaintPipeline:
        """The model's own modules, with [actions] inpaint_model's 9-channel UNet in place of its UNet when set
        (only that UNet is loaded: no second base model in memory)."""
        if self._inpaint is None:
            if not self.actions.inpaint_model:
                self._inpaint = StableDiffusionInpaintPipeline.from_pipe(self._txt2img)
            else:
                unet = load_inpaint_unet(self.actions.inpaint_model, self._plan)
                if self._offload is not None:  # hook again with the new UNet beside the others on the next job
                    self._offload.remove()
                self._inpaint = StableDiffusionInpaintPipeline.from_pipe(self._txt2img, unet=unet)
                if self._plan.offload == "none":
                    unet.to(self._device)
                log.info("loaded inpainting UNet of %s beside %s", self.actions.inpaint_model, self.config.model)
            self._inpaint.set_progress_bar_config(disable=True)  # from_pipe does not carry it over
        return self._inpaint

    def _run_upscale(self, params: UpscaleParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """Enlarge (a network or Lanczos); with denoise, redraw that share of the steps at the new size."""
        total = params.effective_steps
        enlarged = self._enlarge(inputs[0].convert("RGB"), (params.width, params.height), params.upscaler, progress)
        progress.step(1, total, None)
        if not params.denoise:
            return EngineResult(images=(enlarged,), seeds=params.seeds[:1], run=self._upscale_run_info())
        if progress.cancelled:
            raise JobCancelled("cancelled after enlarging")
        self.load()
        self._check_thread()
        images, tiling = self._draw(self._img2img, params, dict(image=enlarged, strength=params.denoise),
                                    _Stage(progress, 1, total))
        run = dataclasses.replace(self.run_info(), vae_tiling=tiling)
        return EngineResult(images=images, seeds=params.seeds[:1], run=run)

    def _enlarge(self, image: Image.Image, size: tuple[int, int], upscaler: str, progress: Progress) -> Image.Image:
        """`image` at `size`: by the [upscale] network named `upscaler` (at its own scale, then resized to fit),
        or by Lanczos."""
        if upscaler != "Lanczos":
            network = self._upscale_network(upscaler)
            image = network.upscale(image, tile=self.upscale.tile, cancelled=lambda: progress.cancelled)
            if self.config.memory in ("low", "minimal") and network.device.type != "cpu":
                network.to("cpu")  # a profile that saves GPU memory keeps the network off the card between jobs
        if progress.cancelled:
            raise JobCancelled("cancelled while enlarging")
        return image if image.size == tuple(size) else image.resize(size, Image.Resampling.LANCZOS)

    def _upscale_network(self, name: str):
        from generation.upscale import load_upscaler

        path = Path(self.upscale.model).expanduser()
        if not self.upscale.model or path.name != name:
            raise EaselError(f"this job enlarges with {name}, but [upscale] model is "
                             f"{path.name if self.upscale.model else 'not set'}; set it back to rerun it")
        device, dtype = self._upscale_placement()
        if self._upscaler is None:
            self._upscaler = load_upscaler(path, device, dtype)
            log.info("loaded upscaler %s (%s, %d×)", path, self._upscaler.architecture, self._upscaler.scale)
        elif self._upscaler.device != device:
            self._upscaler.to(device, dtype)
        return self._upscaler

    def _upscale_placement(self) -> tuple[torch.device, torch.dtype]:
        device = self._device or pick_device(self.config.device)
        return device, torch.float16 if device.type == "cuda" else torch.float32

    def _upscale_run_info(self) -> RunInfo:
        device, dtype = self._upscale_placement()
        return RunInfo(model=self.upscale.model or "Lanczos", model_hash=None, memory_profile=self.config.memory,
                       attention="none", dtype=str(dtype).removeprefix("torch."), device=str(device),
                       diffusers_version=diffusers.__version__, torch_version=torch.__version__)

    def _controlnet_pipe(self) -> StableDiffusionControlNetPipeline:
        if self._controlled is not None:
            return self._controlled
        controlnet = load_controlnet(self.sketch.controlnet, self._plan)
        if self._offload is not None:  # from_pipe moves modules; hook again with the ControlNet on the next job
            self._offload.remove()
        self._controlled = controlnet_pipeline(self._txt2img, controlnet, self._plan, self._device)
        log.info("loaded ControlNet %s beside %s", self.sketch.controlnet, self.config.model)
        return self._controlled

    def _run_pix2pix(self, params: SketchParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        from generation.pix2pix import draw_pix2pix, load_pix2pix

        if not self.sketch.pix2pix:
            raise ModelLoadError("--mode pix2pix needs [sketch] pix2pix set to a pix2pix generator (.pth)")
        if self._pix2pix is None:
            self._pix2pix = load_pix2pix(Path(self.sketch.pix2pix).expanduser(), self._device)
        image = draw_pix2pix(self._pix2pix, inputs[0])
        progress.step(1, 1, None)
        run = dataclasses.replace(self.run_info(), controlnet=f"pix2pix:{Path(self.sketch.pix2pix).name}")
        # One generator, no noise: every seed of a batch would draw the same picture.
        return EngineResult(images=(image,), seeds=params.seeds[:1], run=run)

    def _prepare(self, pipe, params: DiffusionParams, size: tuple[int, int] | None = None) -> bool:
        """Set the job's VAE tiling and a fresh scheduler on the pipeline; True if the VAE decodes in tiles.
        `size`: what this call draws, when not the params' own (the hires fix's second pass)."""
        tiling = self._tiling(params, size or (params.width, params.height))
        if tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        spec = SCHEDULERS[params.scheduler]
        # Always start from the model's config: building from the previous job's scheduler would carry
        # its options (e.g. Karras sigmas) into this job and change the pixels of the same seed.
        pipe.scheduler = getattr(diffusers, spec.class_name).from_config(self._scheduler_config, **spec.options)
        return tiling

    def _tiling(self, params: DiffusionParams, size: tuple[int, int]) -> bool:
        # A rerun asks for what its original did; a new job tiles only if it would not fit otherwise.
        if params.vae_tiling is not None:
            return params.vae_tiling
        free = torch.cuda.mem_get_info(self._device)[0] if self._device.type == "cuda" else None
        return needs_tiling(self._plan, *size, params.count, free)

    def _activate_offload(self, pipe) -> None:
        # The hooks sit on the modules all pipelines share, so a switch of job kind moves no weights. Modules
        # only some pipelines use (a ControlNet, an inpainting UNet) are hooked beside them and parked when idle.
        if self._plan.offload == "none":
            return
        if self._offload is None:
            self._offload = SharedOffload(self._plan.offload, self._device)
        shared = self._txt2img
        side = [self._controlled.controlnet] if self._controlled is not None else []
        if self._inpaint is not None and self._inpaint.unet is not shared.unet:
            side.append(self._inpaint.unet)
        if not self._offload.installed:
            self._offload.install((shared.text_encoder, shared.unet, shared.vae), side=side)
        used = (getattr(pipe, "controlnet", None), pipe.unet)
        self._offload.park(keep=[module for module in side if any(module is m for m in used)])

    def run_info(self) -> RunInfo | None:
        plan = self._plan
        if plan is None:
            return None
        return RunInfo(
            model=self.config.model,
            model_hash=self._model_hash,
            memory_profile=plan.profile,
            attention=plan.attention,
            dtype=plan.dtype,
            device=str(self._device),
            diffusers_version=diffusers.__version__,
            torch_version=torch.__version__,
        )
