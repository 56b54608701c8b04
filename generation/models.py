"""The model library: the models people may pick by name, and the family of each (SD 1.x, SD 2.x, SDXL).

`[generation] model` names the default: a `[models.<name>]` table, or a model source itself, which then
becomes the model called "default". A family left on "auto" is read without loading any weights: from a
diffusers folder's configs, a checkpoint's tensor names (the safetensors header), or a hub id's cached
configs, else its name. Nothing here imports torch: the bot reads it to check a command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from generation.addons import LORA_SUFFIXES, AddonError, find_files, lora_file_problem, split_loras
from generation.config import GenerationConfig, ModelEntry, ModelsConfig
from generation.files import safetensors_header
from storage.errors import EaselError

DEFAULT_NAME = "default"
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
# The sizes SDXL was trained at (its aspect-ratio buckets): --ar picks the closest, transposed for portraits.
SDXL_SIZES = ((1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640))
NATIVE_SIDE = {"sd1": 512, "sd2": 768, "sdxl": 1024}  # a family's square training size


class UnknownModel(EaselError):
    """A job names a model that is not configured; the text lists those that are."""


@dataclass(frozen=True)
class ModelSpec:
    """One configured model: its name, where its weights are, and its family."""

    name: str
    source: str
    family: str  # "sd1", "sd2" or "sdxl"
    vae: str = ""
    single_file_config: str = ""
    refiner: str = ""

    @property
    def label(self) -> str:
        return FAMILY_LABELS[self.family]


def default_name(generation: GenerationConfig, models: ModelsConfig) -> str:
    return generation.model if generation.model in models.named else DEFAULT_NAME


def catalog(generation: GenerationConfig, models: ModelsConfig) -> dict[str, ModelSpec]:
    """Every model by name, the default first; raises EaselError where [generation] model and a table clash."""
    entries = dict(models.named)
    default = default_name(generation, models)
    if default == DEFAULT_NAME:
        if DEFAULT_NAME in entries:
            raise EaselError(f"[generation] model {generation.model!r} would be the model named 'default', and a "
                             "[models.default] table exists too; name that table's model in [generation] model")
        entries[DEFAULT_NAME] = ModelEntry(source=generation.model, single_file_config=generation.single_file_config)
    ordered = {default: entries.pop(default), **dict(sorted(entries.items()))}
    return {name: _spec(name, entry) for name, entry in ordered.items()}


def _spec(name: str, entry: ModelEntry) -> ModelSpec:
    family = entry.family if entry.family != "auto" else detect_family(entry.source)
    if entry.refiner and family != "sdxl":
        raise EaselError(f"[models.{name}] refiner: a refiner finishes SDXL pictures, and {entry.source!r} is "
                         f"{FAMILY_LABELS[family]} (set family = \"sdxl\" if it is SDXL)")
    return ModelSpec(name, entry.source, family, entry.vae, entry.single_file_config, entry.refiner)


def pick(specs: dict[str, ModelSpec], name: str) -> ModelSpec:
    """The model called `name`; an unknown name is one line listing the configured ones."""
    if name in specs:
        return specs[name]
    raise UnknownModel(f"no model is named {name!r} here; configured: {', '.join(specs)} "
                       "(add a [models.<name>] table to the config for another)")


def detect_family(source: str) -> str:
    """sd1, sd2 or sdxl, read from the model's files without loading it; sd1 when nothing says otherwise."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_family(path)
    if path.suffix == ".safetensors" and path.is_file():
        return _checkpoint_family(path)
    lowered = source.lower()
    cached = _cached_index(source)
    if cached is not None:
        return _folder_family(cached.parent)
    if "xl" in re.split(r"[^a-z0-9]+", lowered) or "sdxl" in lowered:
        return "sdxl"
    if "stable-diffusion-2" in lowered:
        return "sd2"
    return "sd1"


def _folder_family(folder: Path) -> str:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "sd1"
    if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "sd1"
    return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"


def _checkpoint_family(path: Path) -> str:
    """From a .safetensors checkpoint's tensor names (its JSON header; no weights read)."""
    keys = safetensors_header(path) or {}
    if any(key.startswith("conditioner.embedders.1.") for key in keys):
        return "sdxl"
    if any(key.startswith("cond_stage_model.model.") for key in keys):  # OpenCLIP: SD 2.x
        return "sd2"
    return "sd1"


def _cached_index(repo: str) -> Path | None:
    """A hub model's model_index.json when it is already downloaded (never fetched here)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo, "model_index.json")
    except Exception:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def sdxl_size(ratio_w: int, ratio_h: int) -> tuple[int, int]:
    """The SDXL training size closest to an aspect ratio (transposed for a portrait)."""
    wide = ratio_w >= ratio_h
    target = max(ratio_w, ratio_h) / min(ratio_w, ratio_h)
    width, height = min(SDXL_SIZES, key=lambda size: abs(size[0] / size[1] - target))
    return (width, height) if wide else (height, width)


def loras_of(prompt: str, lora_dir: str, negative_prompt: str = "", family: str = "") -> list[tuple[object, Path]]:
    """The prompt's <lora:name:weight> tags with their files; an unknown name is one line listing those found,
    and with the model's `family`, a file that is plainly no LoRA for it is one line saying why."""
    if split_loras(negative_prompt)[1]:
        raise AddonError("a <lora:…> tag goes in the prompt, not in the negative prompt")
    _, uses = split_loras(prompt)
    if not uses:
        return []
    found = find_files(lora_dir, LORA_SUFFIXES)
    for use in uses:
        if use.name not in found:
            where = f"[models] lora_dir ({lora_dir})" if lora_dir else "[models] lora_dir, which is not set"
            listed = f"; found: {', '.join(found)}" if found else ""
            raise AddonError(f"no LoRA named {use.name!r} in {where}{listed}")
        problem = lora_file_problem(found[use.name], family) if family else None
        if problem:
            raise AddonError(problem)
    return [(use, found[use.name]) for use in uses]
