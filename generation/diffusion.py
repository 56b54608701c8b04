"""Stable Diffusion text→image and image→image on one lazily loaded set of weights."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
from pathlib import Path

import diffusers
import huggingface_hub
import torch
import transformers
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image

from generation.config import GenerationConfig, SketchConfig
from generation.engine import EngineResult, JobCancelled, ModelLoadError, Progress
from generation.load_errors import (
    SINGLE_FILE_SUFFIXES,
    HubTrouble,
    exception_chain,
    file_reason,
    hub_failure,
    hub_trouble,
    looks_like_path,
    missing_path,
    not_diffusers_folder,
    other_family,
    reason,
    root,
    sentence,
)
from generation.memory import MemoryPlan, apply_plan, needs_tiling, plan_memory
from generation.offload import SharedOffload
from generation.preview import latent_preview
from generation.prompts import encode_prompts
from generation.schedulers import SCHEDULERS
from storage.records import DiffusionParams, Img2ImgParams, JobKind, RunInfo, SketchParams, is_hub_id

log = logging.getLogger(__name__)
# On a log record: its text also reaches the person whose job failed (a console prints it once, not twice).
SHOWN = {"shown": True}



def pick_device(requested: str) -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("[generation] device is 'cuda' but torch sees no CUDA GPU; set device = \"auto\" or \"cpu\"")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("[generation] device is 'mps' but this torch has no MPS support; set device = \"auto\" or \"cpu\"")
    return torch.device(requested)


def device_name(requested: str) -> str:
    """The card (or CPU) a worker with this [generation] device draws on, for `easel workers`."""
    try:
        device = pick_device(requested)
    except ModelLoadError:
        return f"{requested} (not available)"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)" if device.type == "cpu" else device.type


def _xformers_available() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def file_sha256(path: Path) -> str:
    """The checkpoint's sha256 (AUTOMATIC1111 shows its first 10 hex digits as the model hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class DiffusionEngine:
    """Loads the configured model on first use and runs txt2img / img2img jobs on it."""

    KINDS = (JobKind.TXT2IMG, JobKind.IMG2IMG, JobKind.SKETCH)  # the job kinds this engine draws

    def __init__(self, config: GenerationConfig, sketch: SketchConfig | None = None) -> None:
        self.config = config
        self.sketch = sketch or SketchConfig()
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

    # ---- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load weights and apply the memory plan; a failure leaves the engine unloaded to retry later."""
        if self._txt2img is not None:
            return
        self._check_thread()
        # Loading bars for a few-second load are noise; the hub's download bar on a first run (GBs)
        # is not, and transformers' switch turns that off too, so turn it back on.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()
        device = pick_device(self.config.device)
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        plan = plan_memory(
            self.config.memory, device.type, total,
            dtype=self.config.dtype, xformers_available=_xformers_available(),
        )
        dtype = getattr(torch, plan.dtype)
        pipe = self._load_pipeline(dtype)
        pipe.set_progress_bar_config(disable=True)
        # img2img shares every module; build it before any offload hooks exist.
        img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe, dtype=dtype)
        img2img.set_progress_bar_config(disable=True)
        plan = apply_plan(pipe, plan)
        if plan.offload == "none":
            pipe.to(device)
        if self.config.compile:
            self._compile(pipe.unet, plan, device)
        self._txt2img, self._img2img, self._plan, self._device = pipe, img2img, plan, device
        self._scheduler_config = pipe.scheduler.config
        log.info(
            "loaded %s on %s: profile %s, %s, attention %s, offload %s",
            self.config.model, device, plan.profile, plan.dtype, plan.attention, plan.offload,
        )

    @staticmethod
    def _compile(unet, plan: MemoryPlan, device: torch.device) -> None:
        """Compile the UNet in place, so every pipeline sharing it (img2img, ControlNet) runs it compiled.

        dynamic=None: the first size compiles static kernels, the first other size recompiles once with
        dynamic shapes, and no size after that compiles again. Inductor caches its kernels on disk
        (TORCHINDUCTOR_CACHE_DIR; easel run points it into the data folder), so a restart reuses them.
        """
        if plan.offload != "none":
            log.warning("[generation] compile is ignored under the %s profile: offload hooks and a compiled "
                        "UNet do not mix; use memory = \"speed\" or \"balanced\"", plan.profile)
            return
        unet.to(memory_format=torch.channels_last)
        mode = "max-autotune-no-cudagraphs" if device.type == "cuda" else None
        compiled = torch.compile(unet.forward, mode=mode, dynamic=None)

        def forward(sample, *args, **kwargs):
            # img2img latents come out of the VAE channels-last; one layout keeps them on the same kernels.
            return compiled(sample.contiguous(), *args, **kwargs)

        unet.forward = forward  # the module object stays: every pipeline built on it runs compiled
        unet.easel_compiled = True
        log.info("the UNet is compiled on its first job (minutes on a GPU, once; cached on disk afterwards)")

    def _load_pipeline(self, dtype: torch.dtype) -> StableDiffusionPipeline:
        # The queue shows an EaselError to the user and logs nothing, so easel.log gets the whole story here.
        try:
            return self._from_model(dtype)
        except ModelLoadError as exc:  # found by our own checks: the message is the whole story
            log.error("model load failed: %s", exc, extra=SHOWN)
            raise
        except Exception as exc:  # hub unreachable, missing files, wrong architecture…
            error = ModelLoadError(self._load_failure(exc))
            log.error("model load failed: %s", error, exc_info=exc, extra=SHOWN)
            raise error from exc

    def _from_model(self, dtype: torch.dtype) -> StableDiffusionPipeline:
        model = self.config.model
        path = Path(model).expanduser()
        options = dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
        if path.suffix in SINGLE_FILE_SUFFIXES:
            if not path.is_file():
                raise ModelLoadError(missing_path(model, path, "file"))
            if self.config.single_file_config:
                options["config"] = self._single_file_config(model)
            self._model_hash = file_sha256(path)
            return StableDiffusionPipeline.from_single_file(str(path), **options)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(not_diffusers_folder(model, path))
            family = other_family(path / "model_index.json")
            if family:
                raise ModelLoadError(
                    f"{model!r} is a {family} model, not Stable Diffusion 1.x/2.x; easel draws with SD 1.x/2.x "
                    "models (StableDiffusionPipeline), so point [generation] model at one of those"
                )
            return StableDiffusionPipeline.from_pretrained(path, **options)
        if path.exists():
            raise ModelLoadError(
                f"model {model!r} is a file but not a .safetensors/.ckpt checkpoint; point [generation] model at a "
                "checkpoint file, a local diffusers folder or a hub id"
            )
        if not is_hub_id(model):
            if looks_like_path(model):
                raise ModelLoadError(missing_path(model, path, "folder"))
            raise ModelLoadError(
                f"model {model!r} is neither a folder, a .safetensors/.ckpt file nor a hub id like "
                "'stable-diffusion-v1-5/stable-diffusion-v1-5'; fix [generation] model in your config"
            )
        return StableDiffusionPipeline.from_pretrained(model, **options)

    def _load_failure(self, exc: Exception) -> str:
        """What went wrong, in words for a newcomer: the real cause from the exception chain, and what to do."""
        model = self.config.model
        path = Path(model).expanduser()
        if path.suffix in SINGLE_FILE_SUFFIXES:
            return self._single_file_failure(model, exc)
        if path.is_dir():
            return (
                f"could not load model {model!r}: {sentence(file_reason(exc, single_file=False))} The folder does "
                "not load as a complete Stable Diffusion 1.x/2.x model in diffusers format; download or convert it "
                "again, or set [generation] model to another model."
            )
        trouble = hub_trouble(exc)
        if trouble is None:
            cause = root(exc)
            return (
                f"could not load model {model!r}: {type(cause).__name__}: {sentence(reason(cause))} "
                "The full traceback is in easel.log."
            )
        return hub_failure(model, path, trouble)

    def _single_file_config(self, model: str) -> str:
        # diffusers treats anything that is not an existing folder as a hub id; catch a mistyped path here.
        config = self.config.single_file_config
        folder = Path(config).expanduser()  # diffusers does not expand ~; [generation] model does
        if (not is_hub_id(config) or folder.exists()) and not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"[generation] single_file_config {config!r} is not a diffusers folder (no model_index.json); "
                f"point it at a diffusers folder or hub id of the same model family as {model!r}"
            )
        return str(folder)

    def _single_file_failure(self, model: str, exc: Exception) -> str:
        # A checkpoint file holds only weights; the component configs come from single_file_config or,
        # when that is empty, from the hub repo diffusers infers from the keys (stable-diffusion-v1-5 for SD 1.x).
        config = self.config.single_file_config
        trouble = hub_trouble(exc)
        if trouble is None and any(isinstance(link, LocalEntryNotFoundError) for link in exception_chain(exc)):
            trouble = HubTrouble("missing", reason(exc))
        if trouble is not None:
            cause = trouble.describe("they are")
            # Waiting for the network helps only where the hub was not reached, not where it said no.
            connect = trouble.kind not in ("not_found", "gated", "missing_file")
            if not config:
                return (
                    f"could not load model {model!r}: a checkpoint file needs the configs of its model family, "
                    f"and they could not be fetched from the Hugging Face hub: {cause}. Set [generation] "
                    "single_file_config to a local diffusers folder of the same family (for SD 1.5, a downloaded "
                    "stable-diffusion-v1-5/stable-diffusion-v1-5)"
                    + (", or connect once so they can be downloaded." if connect else ".")
                )
            fix = "connect once so it can be downloaded" if connect else "check its spelling"
            return (
                f"could not load model {model!r}: [generation] single_file_config {config!r} is not a local "
                f"folder and could not be fetched from the Hugging Face hub: {cause}. Point it at a local "
                f"diffusers folder of the same family, or {fix}."
            )
        family = f" of the same family as [generation] single_file_config {config!r}" if config else ""
        return (
            f"could not load model {model!r}: {sentence(file_reason(exc, single_file=True))} The file does not load "
            f"as a complete Stable Diffusion 1.x/2.x checkpoint{family}; download it again or set [generation] model "
            "to another model."
        )

    def _check_thread(self) -> None:
        # torch state belongs to one thread; a second caller is a bug in the queue, not a race to tolerate.
        ident = threading.get_ident()
        if self._owner_thread is None:
            self._owner_thread = ident
        elif self._owner_thread != ident:
            raise RuntimeError("DiffusionEngine used from two threads")

    # ---- running -------------------------------------------------------------------------
    def unavailable(self) -> str | None:
        return None  # [generation] model always names a model; a load failure is reported per job

    def run(self, params: DiffusionParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """Draw the images of one job; raises JobCancelled if cancelled while running."""
        if progress.cancelled:
            raise JobCancelled("cancelled before it started")
        self.load()
        if progress.cancelled:  # a load can take minutes (a first download); honour a cancel made meanwhile
            raise JobCancelled("cancelled while the model loaded")
        self._check_thread()
        if isinstance(params, SketchParams) and params.mode == "pix2pix":
            return self._run_pix2pix(params, inputs, progress)
        img2img = isinstance(params, Img2ImgParams)
        sketch = isinstance(params, SketchParams)
        pipe = self._img2img if img2img else self._controlnet_pipe() if sketch else self._txt2img
        self._activate_offload(sketch)
        tiling = self._tiling(params)
        if tiling:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        spec = SCHEDULERS[params.scheduler]
        # Always start from the model's config: building from the previous job's scheduler would carry
        # its options (e.g. Karras sigmas) into this job and change the pixels of the same seed.
        pipe.scheduler = getattr(diffusers, spec.class_name).from_config(self._scheduler_config, **spec.options)

        # Previews only when someone shows them: each one waits for the GPU to catch up.
        every = self.config.preview_every if getattr(progress, "wants_preview", True) else 0

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

        # One CPU generator per image: image k is reproducible alone and identical on any machine.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in params.seeds]
        # A1111's prompt rules: emphasis like (word:1.2) and prompts past CLIP's 77 tokens, in chunks.
        prompt_embeds, negative_embeds = encode_prompts(
            pipe.tokenizer, pipe.text_encoder, params.prompt, params.negative_prompt,
            pipe._execution_device, getattr(torch, self._plan.dtype),
        )
        common = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=params.steps,
            guidance_scale=params.cfg,
            num_images_per_prompt=params.count,
            generator=generators,
            callback_on_step_end=on_step_end,
        )
        if (img2img or sketch) and len(inputs) != 1:
            raise ValueError(f"{params.kind} job with {len(inputs)} input images instead of 1")
        with torch.inference_mode():
            if img2img:
                image = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
                output = pipe(image=image, strength=params.strength, **common)
            elif sketch:
                # The stored control image is already the job's size; NEAREST keeps its lines crisp if not.
                control = inputs[0].convert("RGB").resize((params.width, params.height), Image.Resampling.NEAREST)
                output = pipe(image=control, height=params.height, width=params.width,
                              controlnet_conditioning_scale=params.control_scale,
                              control_guidance_start=params.guidance_start, control_guidance_end=params.guidance_end,
                              **common)
            else:
                output = pipe(height=params.height, width=params.width, **common)
        if pipe.interrupt:
            raise JobCancelled("cancelled while running")
        run = dataclasses.replace(self.run_info(), vae_tiling=tiling,
                                  controlnet=self.sketch.controlnet if sketch else None)
        return EngineResult(images=tuple(output.images), seeds=params.seeds, run=run)

    def _controlnet_pipe(self) -> StableDiffusionControlNetPipeline:
        """The ControlNet pipeline on the SAME modules as text→image: only the ControlNet's weights are new."""
        if self._controlled is not None:
            return self._controlled
        dtype = getattr(torch, self._plan.dtype)
        name = self.sketch.controlnet
        folder = Path(name).expanduser()
        try:
            controlnet = ControlNetModel.from_pretrained(str(folder) if folder.is_dir() else name, torch_dtype=dtype)
        except Exception as exc:
            message = (f"could not load the ControlNet {name!r} ([sketch] controlnet): {sentence(reason(root(exc)))} "
                       "Set [sketch] controlnet to a local diffusers ControlNet folder or a hub id such as "
                       "'lllyasviel/control_v11p_sd15_scribble', or connect once so it can be downloaded.")
            log.error("ControlNet load failed: %s", message, exc_info=exc, extra=SHOWN)
            raise ModelLoadError(message) from exc
        if self._offload is not None:  # from_pipe moves modules; hook again with the ControlNet on the next job
            self._offload.remove()
        pipe = StableDiffusionControlNetPipeline.from_pipe(self._txt2img, controlnet=controlnet, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        if self._plan.offload == "none":
            controlnet.to(self._device)
        self._controlled = pipe
        log.info("loaded ControlNet %s beside %s", name, self.config.model)
        return pipe

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

    def _tiling(self, params: DiffusionParams) -> bool:
        # A rerun asks for what its original did; a new job tiles only if it would not fit otherwise.
        if params.vae_tiling is not None:
            return params.vae_tiling
        free = torch.cuda.mem_get_info(self._device)[0] if self._device.type == "cuda" else None
        return needs_tiling(self._plan, params.width, params.height, params.count, free)

    def _activate_offload(self, sketch: bool) -> None:
        # The hooks sit on the modules all pipelines share, so a switch of job kind moves no weights.
        if self._plan.offload == "none":
            return
        if self._offload is None:
            self._offload = SharedOffload(self._plan.offload, self._device)
        controlnet = (self._controlled.controlnet,) if self._controlled is not None else ()
        if not self._offload.installed:
            shared = self._txt2img
            self._offload.install((shared.text_encoder, shared.unet, shared.vae), side=controlnet)
        self._offload.park(keep=controlnet if sketch else ())

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
