"""The Stable Diffusion engine: the configured models, each loaded on the first job that names it, drawing
every diffusion kind. Up to [models] keep_in_ram stay loaded (least recently used leaves first); only the
one in use sits on the GPU, so a switch moves weights instead of reading them from disk again."""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline
from PIL import Image

from generation.config import ActionsConfig, GenerationConfig, ModelsConfig, SketchConfig, UpscaleConfig, \
    pix2pix_model_file
from generation.device import pick_device
from generation.diffusion.actions import canvas_and_mask, paste_back
from generation.diffusion.loading import (controlnet_pipeline, load_controlnet, load_inpaint_unet, load_pipelines,
                                         load_refiner)
from generation.diffusion.memory import MemoryPlan, needs_tiling
from generation.diffusion.offload import SharedOffload
from generation.diffusion.preview import latent_preview
from generation.engine import EngineResult, JobCancelled, ModelLoadError, PartOf, Progress, check_job
from generation.models import ModelSpec, catalog, default_name, pick
from generation.prompts import encode_prompts, encode_prompts_xl
from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.params import AnimateParams, DiffusionParams, SketchParams, Txt2ImgParams, UpscaleParams
from storage.records import RunInfo

log = logging.getLogger(__name__)


class _Stage(PartOf):
    """One pass of a job with several (the hires fix, an upscale's redraw): its steps counted on from `offset`
    of `total` in all, so a progress bar runs once from 0 to 100%."""

    def __init__(self, progress: Progress, offset: int, total: int) -> None:
        super().__init__(progress)
        self._offset, self._total = offset, total

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


@dataclass(eq=False)
class _Model:
    """One loaded model: its pipelines (all on the same modules), how it sits in memory, what it has added."""

    spec: ModelSpec
    txt2img: Any
    img2img: Any
    plan: MemoryPlan
    model_hash: str | None
    scheduler_config: Any  # the model's own scheduler config, before any job's options
    inpaint: Any = None  # built on the first zoom or pan
    refiner: Any = None  # an SDXL refiner's image→image pipeline, loaded on the first job that asks for it
    controlled: Any = None  # built on the first sketch job
    controlled_img2img: Any = None  # the same ControlNet redrawing a picture (a clip's frames), built on first use
    offload: SharedOffload | None = None  # hooks on the shared modules, installed when it is in use
    embeddings: dict[str, int] = field(default_factory=dict)  # embedding name → vectors added to its encoders

    @property
    def xl(self) -> bool:
        return self.spec.family == "sdxl"

    @property
    def encoders(self) -> tuple:
        pipe = self.txt2img
        return (pipe.text_encoder, pipe.text_encoder_2) if self.xl else (pipe.text_encoder,)

    def side_modules(self) -> list:
        """Modules only some of its pipelines use: a ControlNet, a dedicated inpainting UNet."""
        side = [self.controlled.controlnet] if self.controlled is not None else []
        if self.inpaint is not None and self.inpaint.unet is not self.txt2img.unet:
            side.append(self.inpaint.unet)
        if self.refiner is not None:
            side.append(self.refiner.unet)
        return side


class DiffusionEngine:
    """Loads each configured model on first use and runs txt2img, img2img, sketch and the result actions on it."""

    def __init__(self, config: GenerationConfig, sketch: SketchConfig | None = None,
                 upscale: UpscaleConfig | None = None, actions: ActionsConfig | None = None,
                 models: ModelsConfig | None = None, pix2pix_models: Path | None = None) -> None:
        self.config = config
        self.pix2pix_models = pix2pix_models  # trained pix2pix models by name (--pix2pix NAME), one folder each
        self.sketch = sketch or SketchConfig()
        self.upscale = upscale or UpscaleConfig()
        self.actions = actions or ActionsConfig()
        self.models = models or ModelsConfig()
        self.specs = catalog(config, self.models)
        self.default = default_name(config, self.models)
        self._loaded: OrderedDict[str, _Model] = OrderedDict()  # least recently used first
        self._active: _Model | None = None  # the model on the device (the only one, where that is a GPU)
        self._upscaler = None  # the [upscale] network, loaded on the first job that enlarges with it
        self._pix2pix = None  # ((file, its mtime), the pix2pix generator) of the last pix2pix job
        self._device: torch.device | None = None
        self._addons = None  # LoRA state dicts read so far (generation/addons.py), made on the first LoRA
        self._owner_thread: int | None = None

    # The model in use (tests and benchmarks read these).
    @property
    def _txt2img(self):
        return self._active.txt2img if self._active else None

    @property
    def _plan(self) -> MemoryPlan | None:
        return self._active.plan if self._active else None

    @property
    def loaded(self) -> list[str]:
        """The names of the models in memory, the one in use last."""
        return list(self._loaded)

    def load(self, name: str = "") -> _Model:
        """The model called `name` (the default when empty) loaded and on the device; a failed load leaves
        nothing half-loaded, to try again on the next job."""
        self._check_thread()
        spec = pick(self.specs, name or self.default)
        model = self._loaded.get(spec.name)
        if model is None:
            self._make_room()
            self._park(self._active)
            self._active = None  # parked: if this load fails, the next job puts that model back in place
            model = self._load(spec)
            self._loaded[spec.name] = model
        elif model is not self._active:
            self._park(self._active)
            self._place(model)
        self._loaded.move_to_end(spec.name)
        self._active = model
        return model

    def _load(self, spec: ModelSpec) -> _Model:
        settings = self.config.model_copy(update=dict(model=spec.source, single_file_config=spec.single_file_config))
        # Models naming the same VAE share one copy of it (only the model in use is on the GPU).
        vae = next((other.txt2img.vae for other in self._loaded.values() if spec.vae and other.spec.vae == spec.vae),
                   spec.vae)
        loaded = load_pipelines(settings, spec.family, vae)
        self._device = loaded.device
        return _Model(spec, loaded.txt2img, loaded.img2img, loaded.plan, loaded.model_hash,
                      loaded.txt2img.scheduler.config)

    def _make_room(self) -> None:
        """Let the least recently used models go until one more fits in [models] keep_in_ram."""
        while len(self._loaded) >= self.models.keep_in_ram:
            name, model = self._loaded.popitem(last=False)
            if model is self._active:
                self._park(model)
                self._active = None
            log.info("unloaded model %s (keep_in_ram = %d)", name, self.models.keep_in_ram)
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _park(self, model: _Model | None) -> None:
        """Move a model off the GPU (its weights stay in RAM for the next switch back)."""
        if model is None or self._device is None or self._device.type == "cpu":
            return
        if model.offload is not None and model.offload.installed:
            model.offload.remove()  # weights end up on the host; hooks go on again when it is used
        elif model.plan.offload == "none":
            model.txt2img.to("cpu")
            for module in model.side_modules():
                module.to("cpu")
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _place(self, model: _Model) -> None:
        if model.plan.offload == "none" and self._device is not None:
            model.txt2img.to(self._device)
            for module in model.side_modules():
                module.to(self._device)

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
        if params.kind == "animate":
            return self._next_frame(params, inputs, progress)
        if params.kind == "upscale" and not params.denoise:  # a plain enlargement needs no model at all
            return self._run_upscale(None, params, inputs, progress)
        model = self.load(params.model)  # an unknown name fails before anything is loaded or moved
        if progress.cancelled:  # a load can take minutes (a first download); honour a cancel made meanwhile
            raise JobCancelled("cancelled while the model loaded")
        if params.kind == "sketch" and params.mode == "pix2pix":
            return self._run_pix2pix(model, params, inputs, progress)
        with self._extras(model, params) as extras:
            if params.kind == "upscale":
                result = self._run_upscale(model, params, inputs, progress)
                return dataclasses.replace(result, run=dataclasses.replace(result.run, **extras))
            hires = isinstance(params, Txt2ImgParams) and params.hires
            refined = isinstance(params, Txt2ImgParams) and params.refiner and params.refiner < 1
            pipe, options = self._KIND_CALLS[params.kind](self, model, params, inputs)
            first = _Stage(progress, 0, params.effective_steps) if hires or refined else progress
            if refined:
                images, tiling = self._refined(model, params, options, first)
            else:
                images, tiling = self._draw(model, pipe, params, options, first)
            if params.kind in ("zoom", "pan"):  # the original's own pixels where it sits on the canvas
                box = params.layout(inputs[0].size)[1]
                images = tuple(paste_back(image, inputs[0], box) for image in images)
            if hires:
                images, tiling = self._hires(model, params, images, progress)
        run = dataclasses.replace(self.run_info(), vae_tiling=tiling, controlnet=self._steered_by(model, pipe),
                                  refiner=model.spec.refiner if refined else None, **extras)
        return EngineResult(images=images, seeds=params.seeds, run=run)

    def _extras(self, model: _Model, params: DiffusionParams):
        """The job's LoRAs set on the model for the job and taken off after, and its embeddings added."""
        from generation.addons import LoraCache
        from generation.diffusion.extras import JobExtras

        if self._addons is None:
            self._addons = LoraCache()
        return JobExtras(model, params, self.models, self._addons)

    def _steered_by(self, model: _Model, pipe) -> str | None:
        """What drew besides the model, for the record: the sketch's ControlNet, or a dedicated inpainting UNet."""
        if pipe is model.controlled:
            return self.sketch.controlnet_sdxl if model.xl else self.sketch.controlnet
        if pipe is model.inpaint and pipe.unet is not model.txt2img.unet:
            return f"inpaint:{self.actions.inpaint_model}"
        return None

    def _draw(self, model: _Model, pipe, params: DiffusionParams, options: dict, progress: Progress,
              size: tuple[int, int] | None = None) -> tuple[tuple[Image.Image, ...], bool]:
        """One pipeline call for the job's seeds: its images, and whether the VAE decoded in tiles."""
        from generation.diffusion.extras import job_prompts

        self._activate_offload(model, pipe)
        tiling = self._prepare(model, pipe, params, size)
        # Previews only when someone shows them: each one waits for the GPU to catch up.
        every = self.config.preview_every if getattr(progress, "wants_preview", True) else 0
        # One CPU generator per image: image k is reproducible alone and identical on any machine. (A list
        # of images, the hires fix's, pairs image k with generator k.)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in params.seeds]
        # A1111's prompt rules: emphasis like (word:1.2) and prompts past CLIP's 77 tokens, in chunks; its
        # <lora:…> tags taken out and its embeddings' names spelled as their tokens.
        prompt, negative = job_prompts(params, model.embeddings)
        dtype = getattr(torch, model.plan.dtype)
        if model.xl:
            embeds = encode_prompts_xl(pipe, prompt, negative, pipe._execution_device, dtype)
            height, width = size[::-1] if size else (params.height, params.width)
            # SDXL's size conditioning: drawn as if from an uncropped picture of exactly this size.
            options = dict(options, original_size=(height, width), target_size=(height, width),
                           crops_coords_top_left=(0, 0))
        else:
            positive_embeds, negative_embeds = encode_prompts(
                pipe.tokenizer, pipe.text_encoder, prompt, negative, pipe._execution_device, dtype)
            embeds = dict(prompt_embeds=positive_embeds, negative_prompt_embeds=negative_embeds)
        with torch.inference_mode():
            output = pipe(
                **embeds, num_inference_steps=params.steps, guidance_scale=params.cfg,
                num_images_per_prompt=params.count, generator=generators,
                callback_on_step_end=step_callback(progress, every), **options,
            )
        if pipe.interrupt:
            raise JobCancelled("cancelled while running")
        return tuple(output.images), tiling

    def _refined(self, model: _Model, params: Txt2ImgParams, options: dict, stage: _Stage):
        """SDXL's ensemble of experts: the model draws the first `refiner` share of the steps and hands its latents
        to the refiner, which draws the rest (diffusers' denoising_end / denoising_start)."""
        refiner = self._refiner_pipe(model)
        latents, _ = self._draw(model, model.txt2img, params, dict(options, denoising_end=params.refiner,
                                                                    output_type="latent"), stage)
        # The split falls on the schedule's timesteps, not at steps × refiner: count what the model drew.
        done = _Stage(stage, model.txt2img.num_timesteps, params.effective_steps)
        return self._draw(model, refiner, params, dict(image=torch.stack(latents), denoising_start=params.refiner), done)

    def _refiner_pipe(self, model: _Model):
        if model.refiner is None:
            if not model.spec.refiner:
                raise ModelLoadError(f"this job is finished by a refiner, and model {model.spec.name!r} has none "
                                     f"now: set [models.{model.spec.name}] refiner, or rerun with --refiner 0")
            if model.offload is not None:  # hook again with the refiner's UNet beside the others on the next job
                model.offload.remove()
            model.refiner = load_refiner(model.spec.refiner, model.txt2img, model.plan, self._device)
            log.info("loaded refiner %s beside %s", model.spec.refiner, model.spec.name)
        return model.refiner

    def _hires(self, model: _Model, params: Txt2ImgParams, drawn: tuple[Image.Image, ...], progress: Progress):
        """A1111's hires fix: each picture enlarged, then redrawn in part at the larger size with its own seed."""
        size = params.hires_size
        enlarged = [self._enlarge(image, size, params.hires_upscaler or "Lanczos", progress) for image in drawn]
        stage = _Stage(progress, params.steps, params.effective_steps)
        return self._draw(model, model.img2img, params, dict(image=enlarged, strength=params.hires_strength),
                          stage, size)

    # ---- each kind: the pipeline that draws it, and what that pipeline takes besides the prompt ----------
    def _txt2img_call(self, model: _Model, params: DiffusionParams, inputs: tuple[Image.Image, ...]):
        return model.txt2img, dict(height=params.height, width=params.width)

    def _img2img_call(self, model: _Model, params: DiffusionParams, inputs: tuple[Image.Image, ...]):
        image = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
        return model.img2img, dict(image=image, strength=params.strength)

    def _sketch_call(self, model: _Model, params: SketchParams, inputs: tuple[Image.Image, ...]):
        pipe = self._controlnet_pipe(model)
        # The stored control image is already the job's size; NEAREST keeps its lines crisp if not.
        control = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.NEAREST)
        return pipe, dict(image=control, height=params.height, width=params.width,
                          controlnet_conditioning_scale=params.control_scale,
                          control_guidance_start=params.guidance_start, control_guidance_end=params.guidance_end)

    def _outpaint_call(self, model: _Model, params, inputs: tuple[Image.Image, ...]):
        """Zoom out and pan: the original on a larger canvas, the rest drawn from noise around it. The model's
        own UNet keeps the original's part by blending its latents in at every step (4-channel inpainting)."""
        canvas_size, box = params.layout(inputs[0].size)
        canvas, mask = canvas_and_mask(inputs[0], canvas_size, box)
        return self._inpaint_pipe(model), dict(image=canvas, mask_image=mask, strength=1.0,
                                               width=canvas_size[0], height=canvas_size[1])

    _KIND_CALLS = {"txt2img": _txt2img_call, "img2img": _img2img_call, "sketch": _sketch_call,
                   "vary": _img2img_call, "zoom": _outpaint_call, "pan": _outpaint_call}
    KINDS = (*_KIND_CALLS, "upscale", "animate")  # the job kinds this engine draws

    # ---- animations: one frame a turn, each drawn as the /imagine job params.frame_params(k) names ----------
    def _next_frame(self, params: AnimateParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """The next frame of an animation: `inputs` are its own (a picture, a clip's frames) then the frames its
        earlier turns drew."""
        from generation.animation import matched_colours, moved

        own, drawn = inputs[:len(params.inputs)], inputs[len(params.inputs):]
        k = len(drawn)
        frame = params.frame_params(k)
        if params.mode == "sweep":
            return self.run(frame, own, progress)
        if params.mode == "video":
            if params.control_scale:
                return self._controlled_frame(params, frame, own[k], progress)
            return self.run(frame, (own[k],), progress)
        if k == 0 and params.starts_from_picture:  # the loop starts from the picture itself
            self.load(params.model)
            progress.step(1, 1, None)
            start = own[0].convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
            return EngineResult(images=(start,), seeds=(params.frame_seed(0),), run=self.run_info())
        if k == 0:
            return self.run(frame, (), progress)
        source = moved(drawn[-1], params.zoom, params.rotate, (params.shift_x, params.shift_y))
        if params.colour:
            source = matched_colours(source, drawn[0])
        return self.run(frame, (source,), progress)

    def _controlled_frame(self, params: AnimateParams, frame: DiffusionParams, image: Image.Image,
                          progress: Progress) -> EngineResult:
        """A clip's frame redrawn by image→image with the sketch ControlNet following its edges, so what stands
        still in the clip stays put from frame to frame."""
        from generation.animation import edges

        model = self.load(frame.model)
        if progress.cancelled:
            raise JobCancelled("cancelled while the model loaded")
        with self._extras(model, frame) as extras:
            pipe = self._controlled_img2img_pipe(model)
            picture = image.convert("RGB").resize((frame.width, frame.height), Image.Resampling.LANCZOS)
            images, tiling = self._draw(model, pipe, frame, dict(
                image=picture, control_image=edges(picture), strength=frame.strength,
                controlnet_conditioning_scale=params.control_scale), progress)
        run = dataclasses.replace(self.run_info(), vae_tiling=tiling, controlnet=self._steered_by(model, model.controlled),
                                  **extras)
        return EngineResult(images=images, seeds=frame.seeds, run=run)

    def _controlled_img2img_pipe(self, model: _Model):
        if model.controlled_img2img is None:
            controlled = self._controlnet_pipe(model)
            cls = diffusers.StableDiffusionXLControlNetImg2ImgPipeline if model.xl else \
                diffusers.StableDiffusionControlNetImg2ImgPipeline
            model.controlled_img2img = cls.from_pipe(controlled, dtype=getattr(torch, model.plan.dtype))
            model.controlled_img2img.set_progress_bar_config(disable=True)
        return model.controlled_img2img

    def _inpaint_pipe(self, model: _Model):
        """The model's own modules, with [actions] inpaint_model's 9-channel UNet in place of its UNet when set
        (only that UNet is loaded: no second base model in memory). SDXL models outpaint with their own UNet."""
        if model.inpaint is None:
            if model.xl:
                model.inpaint = StableDiffusionXLInpaintPipeline.from_pipe(model.txt2img)
            elif not self.actions.inpaint_model:
                model.inpaint = StableDiffusionInpaintPipeline.from_pipe(model.txt2img)
            else:
                unet = load_inpaint_unet(self.actions.inpaint_model, model.plan)
                if model.offload is not None:  # hook again with the new UNet beside the others on the next job
                    model.offload.remove()
                model.inpaint = StableDiffusionInpaintPipeline.from_pipe(model.txt2img, unet=unet)
                if model.plan.offload == "none":
                    unet.to(self._device)
                log.info("loaded inpainting UNet of %s beside %s", self.actions.inpaint_model, model.spec.name)
            model.inpaint.set_progress_bar_config(disable=True)  # from_pipe does not carry it over
        return model.inpaint

    def _run_upscale(self, model: _Model | None, params: UpscaleParams, inputs: tuple[Image.Image, ...],
                     progress: Progress) -> EngineResult:
        """Enlarge (a network or Lanczos); with denoise, redraw that share of the steps at the new size."""
        total = params.effective_steps
        enlarged = self._enlarge(inputs[0].convert("RGB"), (params.width, params.height), params.upscaler, progress)
        progress.step(1, total, None)
        if model is None:
            return EngineResult(images=(enlarged,), seeds=params.seeds[:1], run=self._upscale_run_info())
        if progress.cancelled:
            raise JobCancelled("cancelled after enlarging")
        images, tiling = self._draw(model, model.img2img, params, dict(image=enlarged, strength=params.denoise),
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

    def _controlnet_pipe(self, model: _Model):
        if model.controlled is not None:
            return model.controlled
        name = self.sketch.controlnet_sdxl if model.xl else self.sketch.controlnet
        if not name:
            raise ModelLoadError(f"model {model.spec.name!r} is SDXL, and sketches with it need an SDXL ControlNet: "
                                 "set [sketch] controlnet_sdxl (e.g. xinsir/controlnet-scribble-sdxl-1.0), or pick an "
                                 "SD 1.x model with --model")
        # One copy of a ControlNet however many models sketch with it: a model that is not in use has its
        # modules off the GPU, so the one in use has it to itself.
        controlnet = next((other.controlled.controlnet for other in self._loaded.values()
                           if other.controlled is not None and other.xl == model.xl), None)
        if controlnet is None:
            controlnet = load_controlnet(name, model.plan)
        if model.offload is not None:  # from_pipe moves modules; hook again with the ControlNet on the next job
            model.offload.remove()
        model.controlled = controlnet_pipeline(model.txt2img, controlnet, model.plan, self._device)
        log.info("ControlNet %s beside %s", name, model.spec.name)
        return model.controlled

    def _run_pix2pix(self, model: _Model, params: SketchParams, inputs: tuple[Image.Image, ...],
                     progress: Progress) -> EngineResult:
        from generation.pix2pix import draw_pix2pix, load_pix2pix

        if params.pix2pix:  # a model trained here (easel train-pix2pix, /train), by name
            if self.pix2pix_models is None:
                raise ModelLoadError(f"no folder of trained pix2pix models is set up for --pix2pix {params.pix2pix}")
            path, label = pix2pix_model_file(self.pix2pix_models, params.pix2pix), params.pix2pix
        elif self.sketch.pix2pix:
            path = Path(self.sketch.pix2pix).expanduser()
            label = path.name
        else:
            raise ModelLoadError("--mode pix2pix needs [sketch] pix2pix set to a pix2pix generator (.pth), "
                                 "or --pix2pix NAME of a model trained here")
        # Keyed by the file's time too: a model trained again under the same name is loaded afresh.
        key = (path, path.stat().st_mtime_ns if path.is_file() else 0)
        if self._pix2pix is None or self._pix2pix[0] != key:
            self._pix2pix = None  # the old generator goes before the new one loads
            self._pix2pix = (key, load_pix2pix(path, self._device))
        image = draw_pix2pix(self._pix2pix[1], inputs[0])
        progress.step(1, 1, None)
        run = dataclasses.replace(self.run_info(), controlnet=f"pix2pix:{label}")
        # One generator, no noise: every seed of a batch would draw the same picture.
        return EngineResult(images=(image,), seeds=params.seeds[:1], run=run)

    def _prepare(self, model: _Model, pipe, params: DiffusionParams, size: tuple[int, int] | None = None) -> bool:
        """Set the job's VAE tiling and a fresh scheduler on the pipeline; True if the VAE decodes in tiles.
        `size`: what this call draws, when not the params' own (the hires fix's second pass)."""
        tiling = self._tiling(model, params, size or (params.width, params.height))
        if tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        spec = SCHEDULERS[params.scheduler]
        # Always start from the model's config: building from the previous job's scheduler would carry
        # its options (e.g. Karras sigmas) into this job and change the pixels of the same seed.
        pipe.scheduler = getattr(diffusers, spec.class_name).from_config(model.scheduler_config, **spec.options)
        return tiling

    def _tiling(self, model: _Model, params: DiffusionParams, size: tuple[int, int]) -> bool:
        # A rerun asks for what its original did; a new job tiles only if it would not fit otherwise.
        if params.vae_tiling is not None:
            return params.vae_tiling
        free = torch.cuda.mem_get_info(self._device)[0] if self._device.type == "cuda" else None
        return needs_tiling(model.plan, *size, params.count, free)

    def _activate_offload(self, model: _Model, pipe) -> None:
        # The hooks sit on the modules all pipelines share, so a switch of job kind moves no weights. Modules
        # only some pipelines use (a ControlNet, an inpainting UNet) are hooked beside them and parked when idle.
        if model.plan.offload == "none":
            return
        if model.offload is None:
            model.offload = SharedOffload(model.plan.offload, self._device)
        side = model.side_modules()
        if not model.offload.installed:
            model.offload.install((*model.encoders, model.txt2img.unet, model.txt2img.vae), side=side)
        used = (getattr(pipe, "controlnet", None), pipe.unet)
        model.offload.park(keep=[module for module in side if any(module is m for m in used)])

    def run_info(self) -> RunInfo | None:
        model = self._active
        if model is None:
            return None
        plan = model.plan
        vae = None
        if model.xl and plan.dtype == "float16" and model.txt2img.vae.config.get("force_upcast", False):
            vae = "float32 upcast"  # SDXL's own VAE overflows in float16: diffusers decodes it in float32
        return RunInfo(
            model=model.spec.source,
            model_hash=model.model_hash,
            memory_profile=plan.profile,
            attention=plan.attention,
            dtype=plan.dtype,
            device=str(self._device),
            diffusers_version=diffusers.__version__,
            torch_version=torch.__version__,
            family=model.spec.family,
            vae=vae,
        )
