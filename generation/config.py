"""Typed settings for the generation layer, read from the [generation] section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.params.face import PSI
from storage.params.sketch import CONTROL_SCALE

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

Device = Literal["auto", "cuda", "mps", "cpu"]
MemoryProfile = Literal["auto", "speed", "balanced", "low", "minimal"]
DType = Literal["auto", "float16", "bfloat16", "float32"]


class GenerationConfig(BaseModel):
    """Which model to run, where, and how hard to squeeze memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(DEFAULT_MODEL, min_length=1)
    single_file_config: str = ""
    device: Device = "auto"
    memory: MemoryProfile = "auto"
    dtype: DType = "auto"
    preview_every: int = Field(5, ge=0, le=1000)
    # torch.compile the UNet (channels_last): a slow first job, then faster steps where the card and
    # torch support it; only without offload. Compiled kernels may change the last bits of pixels.
    compile: bool = False


DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_scribble"


class SketchConfig(BaseModel):
    """[sketch]: what turns a drawing into a picture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A ControlNet for SD 1.5 as a hub id or a local diffusers folder: scribble by default; lineart,
    # softedge or canny ones work the same way (control_v11p_sd15_lineart, …).
    controlnet: str = Field(DEFAULT_CONTROLNET, min_length=1)
    # The same for SDXL models (e.g. xinsir/controlnet-scribble-sdxl-1.0); empty = sketches need an SD 1.x model.
    controlnet_sdxl: str = ""
    pix2pix: str = ""  # a pix2pix edges→photo generator (.pth state dict) for --mode pix2pix; empty = off
    control_scale: float = Field(1.0, ge=CONTROL_SCALE.low, le=CONTROL_SCALE.high)  # the default conditioning scale


class TrainingConfig(BaseModel):
    """[training]: pix2pix models trained on people's own photos, in turns between other jobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # How long one turn of a training holds the GPU: someone's /imagine waits at most this long for it.
    slice_seconds: float = Field(10.0, gt=0, le=3600)
    # How often its whole state is written to disk: a crash or a kill loses at most this much training.
    checkpoint_minutes: float = Field(5.0, gt=0, le=24 * 60)
    # Where trained models go, one folder per name (NAME/latest_net_G.pth); empty: <data_dir>/pix2pix.
    folder: str = ""

    def models_dir(self, data_dir: Path) -> Path:
        return Path(self.folder).expanduser() if self.folder else Path(data_dir) / "pix2pix"


def pix2pix_model_file(models_dir: Path, name: str) -> Path:
    """The generator of the pix2pix model trained here as `name`: as the reference code names its own."""
    return Path(models_dir) / name / "latest_net_G.pth"


def training_dir(models_dir: Path, name: str) -> Path:
    """Where the run that makes model `name` keeps its pairs, checkpoint, sample sheets and loss plot."""
    return Path(models_dir) / name / "training"


class FacesConfig(BaseModel):
    """[faces]: a StyleGAN2 generator for /face."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str = ""  # an NVIDIA stylegan2-ada-pytorch network .pkl; empty = /face draws with Stable Diffusion
    directions: dict[str, str] = {}  # name → .npy file of a direction in w space (InterFaceGAN's format)
    psi: float = Field(0.7, ge=PSI.low, le=PSI.high)  # the default truncation


class UpscaleConfig(BaseModel):
    """[upscale]: how /upscale and the hires fix enlarge a picture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # An ESRGAN-family network (.pth or .safetensors: ESRGAN/RRDBNet such as 4x-UltraSharp or
    # RealESRGAN_x4plus, or Real-ESRGAN's compact SRVGG); empty = Lanczos resampling.
    model: str = ""
    tile: int = Field(512, ge=64, le=4096)  # input pixels per tile side: smaller needs less memory


class ActionsConfig(BaseModel):
    """[actions]: the numbers behind the buttons under a result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vary_subtle: float = Field(0.35, gt=0, le=1)  # image→image strength of /vary subtle (V buttons)
    vary_strong: float = Field(0.75, gt=0, le=1)  # … and of /vary strong
    # An SD 1.5 inpainting model (9-channel UNet) for /zoom and /pan, as a diffusers folder or hub id: only its
    # UNet is loaded, beside the model's own VAE and text encoder. Empty: the model's own UNet outpaints.
    inpaint_model: str = ""


Family = Literal["auto", "sd1", "sd2", "sdxl"]


class ModelEntry(BaseModel):
    """[models.<name>]: one model people can pick by name with --model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A hub id, a local diffusers folder, or a single .safetensors/.ckpt checkpoint file.
    source: str = Field(min_length=1)
    family: Family = "auto"  # sd1, sd2 or sdxl; auto reads it from the folder's configs or the checkpoint's keys
    vae: str = ""  # another VAE (diffusers folder or hub id), e.g. madebyollin/sdxl-vae-fp16-fix; empty = its own
    single_file_config: str = ""  # for a checkpoint file: a diffusers folder of its family to take configs from
    # SDXL only: a refiner (hub id, folder or checkpoint) that finishes text→image pictures (--refiner F).
    refiner: str = ""


class ModelsConfig(BaseModel):
    """[models]: the named models (each a [models.<name>] table), LoRAs and embeddings, and how many stay loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_in_ram: int = Field(2, ge=1, le=16)  # loaded models kept in CPU RAM (least recently used leaves first)
    lora_dir: str = ""  # LoRA files (.safetensors …) for <lora:name:weight> in a prompt; empty = none
    embeddings_dir: str = ""  # textual-inversion embeddings, used by writing their name in a prompt; empty = none
    named: dict[str, ModelEntry] = {}  # every [models.<name>] table

    @model_validator(mode="before")
    @classmethod
    def _tables_are_models(cls, data: object) -> object:
        # In TOML a [models.sdxl] table is a key of [models] beside its settings: gather the tables by name.
        if isinstance(data, dict) and "named" not in data:
            tables = {key: value for key, value in data.items() if isinstance(value, dict)}
            data = {key: value for key, value in data.items() if key not in tables} | {"named": tables}
        return data
