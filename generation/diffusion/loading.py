"""Reading Stable Diffusion weights (a hub id, a diffusers folder or a checkpoint file) and a ControlNet.

A load that fails says why in words for a newcomer (load_errors.py reads the real cause off the
exception chain) and logs the whole story once, since the queue shows an EaselError and logs nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import diffusers
import huggingface_hub
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from huggingface_hub.errors import LocalEntryNotFoundError

from generation.config import GenerationConfig
from generation.device import pick_device
from generation.diffusion.load_errors import (
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
from generation.diffusion.memory import MemoryPlan, apply_plan, plan_memory
from generation.engine import ModelLoadError
from generation.files import sha256
from storage.records import is_hub_id

log = logging.getLogger(__name__)
# On a log record: its text also reaches the person whose job failed (a console prints it once, not twice).
SHOWN = {"shown": True}


class Pipelines(NamedTuple):
    """The loaded model: text→image, its image→image twin on the same modules, and how they sit on the card."""

    txt2img: StableDiffusionPipeline | StableDiffusionXLPipeline
    img2img: StableDiffusionImg2ImgPipeline | StableDiffusionXLImg2ImgPipeline
    plan: MemoryPlan
    device: torch.device
    model_hash: str | None  # the sha256 of a checkpoint file, or of a folder's UNet weights; None for a hub id


def xformers_available() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def load_pipelines(config: GenerationConfig, family: str = "sd1", vae: str | AutoencoderKL = "") -> Pipelines:
    """Load config.model (of `family`, with another VAE when `vae` names one or is one already loaded) onto the
    device its memory plan allows; raises ModelLoadError with the reason."""
    # Loading bars for a few-second load are noise; the hub's download bar on a first run (GBs)
    # is not, and transformers' switch turns that off too, so turn it back on.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()
    device = pick_device(config.device)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    plan = plan_memory(config.memory, device.type, total, dtype=config.dtype, xformers_available=xformers_available())
    dtype = getattr(torch, plan.dtype)
    xl = family == "sdxl"
    other_vae = _load_vae(vae, dtype) if isinstance(vae, str) and vae else vae or None
    pipe, model_hash = _load_pipeline(config, dtype, xl, other_vae)
    pipe.set_progress_bar_config(disable=True)
    # img2img shares every module; build it before any offload hooks exist.
    img2img = (StableDiffusionXLImg2ImgPipeline if xl else StableDiffusionImg2ImgPipeline).from_pipe(pipe, dtype=dtype)
    img2img.set_progress_bar_config(disable=True)
    plan = apply_plan(pipe, plan)
    if plan.offload == "none":
        pipe.to(device)
    if config.compile:
        compile_unet(pipe.unet, plan, device)
    log.info(
        "loaded %s on %s: profile %s, %s, attention %s, offload %s",
        config.model, device, plan.profile, plan.dtype, plan.attention, plan.offload,
    )
    return Pipelines(pipe, img2img, plan, device, model_hash)


def compile_unet(unet, plan: MemoryPlan, device: torch.device) -> None:
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


def _failed(what: str, message: str, exc: Exception) -> ModelLoadError:
    """A part that did not load: its traceback logged once (the queue shows an EaselError and logs nothing)."""
    log.error("%s load failed: %s", what, message, exc_info=exc, extra=SHOWN)
    return ModelLoadError(message)


def load_controlnet(name: str, plan: MemoryPlan) -> ControlNetModel:
    """The ControlNet of [sketch] controlnet (a local folder or a hub id); raises ModelLoadError with the reason."""
    folder = Path(name).expanduser()
    try:
        return ControlNetModel.from_pretrained(str(folder) if folder.is_dir() else name,
                                               torch_dtype=getattr(torch, plan.dtype))
    except Exception as exc:
        message = (f"could not load the ControlNet {name!r} ([sketch] controlnet): {sentence(reason(root(exc)))} "
                   "Set [sketch] controlnet to a local diffusers ControlNet folder or a hub id such as "
                   "'lllyasviel/control_v11p_sd15_scribble', or connect once so it can be downloaded.")
        raise _failed("ControlNet", message, exc) from exc


def load_inpaint_unet(name: str, plan: MemoryPlan) -> UNet2DConditionModel:
    """The UNet of [actions] inpaint_model (a diffusers folder or hub id); raises ModelLoadError with the reason."""
    folder = Path(name).expanduser()
    try:
        unet = UNet2DConditionModel.from_pretrained(str(folder) if folder.is_dir() else name, subfolder="unet",
                                                    torch_dtype=getattr(torch, plan.dtype))
    except Exception as exc:
        message = (f"could not load the inpainting model {name!r} ([actions] inpaint_model): "
                   f"{sentence(reason(root(exc)))} Set it to a local diffusers SD 1.5 inpainting folder (with a unet "
                   "folder) or a hub id such as 'stable-diffusion-v1-5/stable-diffusion-inpainting', or leave it "
                   "empty to outpaint with the model itself.")
        raise _failed("inpainting model", message, exc) from exc
    if unet.config.in_channels != 9:
        raise ModelLoadError(f"[actions] inpaint_model {name!r} is no inpainting model: its UNet takes "
                             f"{unet.config.in_channels} channels, an inpainting UNet 9 (image, mask and masked image)")
    return unet


def _load_vae(source: str, dtype: torch.dtype) -> AutoencoderKL:
    """A model's other VAE ([models.<name>] vae): a diffusers VAE folder or hub id."""
    folder = Path(source).expanduser()
    try:
        return AutoencoderKL.from_pretrained(str(folder) if folder.is_dir() else source, torch_dtype=dtype)
    except Exception as exc:
        message = (f"could not load the VAE {source!r} ([models] vae): {sentence(reason(root(exc)))} Point it at a "
                   "diffusers VAE folder or a hub id such as 'madebyollin/sdxl-vae-fp16-fix'.")
        raise _failed("VAE", message, exc) from exc


def load_refiner(source: str, base: StableDiffusionXLPipeline, plan: MemoryPlan,
                 device: torch.device) -> StableDiffusionXLImg2ImgPipeline:
    """An SDXL refiner ([models.<name>] refiner: hub id, diffusers folder or checkpoint) on the base model's second
    text encoder, its tokenizer and VAE (the refiner's own are the same weights): only its UNet is new."""
    shared = dict(text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2, vae=base.vae,
                  dtype=getattr(torch, plan.dtype))
    path = Path(source).expanduser()
    try:
        if path.suffix in SINGLE_FILE_SUFFIXES:
            if not path.is_file():
                raise ModelLoadError(missing_path(source, path, "file"))
            pipe = StableDiffusionXLImg2ImgPipeline.from_single_file(str(path), **shared)
        else:
            pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(path) if path.is_dir() else source, **shared)
    except ModelLoadError:
        raise
    except Exception as exc:
        message = (f"could not load the SDXL refiner {source!r} ([models] refiner): {sentence(reason(root(exc)))} "
                   "Point it at a diffusers folder, a checkpoint file or a hub id such as "
                   "'stabilityai/stable-diffusion-xl-refiner-1.0', or leave it empty.")
        raise _failed("refiner", message, exc) from exc
    pipe.set_progress_bar_config(disable=True)
    apply_plan(pipe, plan)
    if plan.offload == "none":
        pipe.unet.to(device)
    return pipe


def controlnet_pipeline(
    txt2img: StableDiffusionPipeline, controlnet: ControlNetModel, plan: MemoryPlan, device: torch.device,
) -> StableDiffusionControlNetPipeline:
    """The ControlNet pipeline on the SAME modules as text→image: only the ControlNet's weights are new."""
    cls = StableDiffusionXLControlNetPipeline if isinstance(txt2img, StableDiffusionXLPipeline) else \
        StableDiffusionControlNetPipeline
    pipe = cls.from_pipe(txt2img, controlnet=controlnet, dtype=getattr(torch, plan.dtype))
    pipe.set_progress_bar_config(disable=True)
    if plan.offload == "none":
        controlnet.to(device)
    return pipe


def _load_pipeline(config: GenerationConfig, dtype: torch.dtype, xl: bool,
                   vae: AutoencoderKL | None) -> tuple[StableDiffusionPipeline, str | None]:
    # The queue shows an EaselError to the user and logs nothing, so easel.log gets the whole story here.
    try:
        return _from_model(config, dtype, xl, vae)
    except ModelLoadError as exc:  # found by our own checks: the message is the whole story
        log.error("model load failed: %s", exc, extra=SHOWN)
        raise
    except Exception as exc:  # hub unreachable, missing files, wrong architecture…
        raise _failed("model", _load_failure(config, exc), exc) from exc


def _from_model(config: GenerationConfig, dtype: torch.dtype, xl: bool,
                vae: AutoencoderKL | None) -> tuple[StableDiffusionPipeline, str | None]:
    model = config.model
    path = Path(model).expanduser()
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    options: dict = dict(dtype=dtype) if xl else dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
    if vae is not None:
        options["vae"] = vae
    if path.suffix in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise ModelLoadError(missing_path(model, path, "file"))
        if config.single_file_config:
            options["config"] = _single_file_config(config)
        model_hash = sha256(path)
        return cls.from_single_file(str(path), **options), model_hash
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(not_diffusers_folder(model, path))
        family = other_family(path / "model_index.json")
        if xl and family == "StableDiffusionXLPipeline":
            family = None
        if family:
            raise ModelLoadError(
                f"{model!r} is a {family} model, not Stable Diffusion 1.x/2.x or SDXL; easel draws with those "
                "(set family = \"sdxl\" in its [models.<name>] table for an SDXL model)"
            )
        return cls.from_pretrained(path, **options), _folder_hash(path)
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
    return cls.from_pretrained(model, **options), None


def _folder_hash(folder: Path) -> str | None:
    """A diffusers folder's model hash: its UNet weights' sha256 (what tells two fine-tunes apart)."""
    weights = sorted((folder / "unet").glob("diffusion_pytorch_model*.safetensors"))
    return sha256(weights[0]) if weights else None


def _load_failure(config: GenerationConfig, exc: Exception) -> str:
    """What went wrong, in words for a newcomer: the real cause from the exception chain, and what to do."""
    model = config.model
    path = Path(model).expanduser()
    if path.suffix in SINGLE_FILE_SUFFIXES:
        return _single_file_failure(config, exc)
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


def _single_file_config(config: GenerationConfig) -> str:
    # diffusers treats anything that is not an existing folder as a hub id; catch a mistyped path here.
    folder = Path(config.single_file_config).expanduser()  # diffusers does not expand ~; [generation] model does
    if (not is_hub_id(config.single_file_config) or folder.exists()) and not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"[generation] single_file_config {config.single_file_config!r} is not a diffusers folder (no "
            f"model_index.json); point it at a diffusers folder or hub id of the same model family as {config.model!r}"
        )
    return str(folder)


def _single_file_failure(config: GenerationConfig, exc: Exception) -> str:
    # A checkpoint file holds only weights; the component configs come from single_file_config or,
    # when that is empty, from the hub repo diffusers infers from the keys (stable-diffusion-v1-5 for SD 1.x).
    model, single = config.model, config.single_file_config
    trouble = hub_trouble(exc)
    if trouble is None and any(isinstance(link, LocalEntryNotFoundError) for link in exception_chain(exc)):
        trouble = HubTrouble("missing", reason(exc))
    if trouble is not None:
        cause = trouble.describe("they are")
        # Waiting for the network helps only where the hub was not reached, not where it said no.
        connect = trouble.kind not in ("not_found", "gated", "missing_file")
        if not single:
            return (
                f"could not load model {model!r}: a checkpoint file needs the configs of its model family, "
                f"and they could not be fetched from the Hugging Face hub: {cause}. Set [generation] "
                "single_file_config to a local diffusers folder of the same family (for SD 1.5, a downloaded "
                "stable-diffusion-v1-5/stable-diffusion-v1-5)"
                + (", or connect once so they can be downloaded." if connect else ".")
            )
        fix = "connect once so it can be downloaded" if connect else "check its spelling"
        return (
            f"could not load model {model!r}: [generation] single_file_config {single!r} is not a local "
            f"folder and could not be fetched from the Hugging Face hub: {cause}. Point it at a local "
            f"diffusers folder of the same family, or {fix}."
        )
    family = f" of the same family as [generation] single_file_config {single!r}" if single else ""
    return (
        f"could not load model {model!r}: {sentence(file_reason(exc, single_file=True))} The file does not load "
        f"as a complete Stable Diffusion 1.x/2.x checkpoint{family}; download it again or set [generation] model "
        "to another model."
    )
