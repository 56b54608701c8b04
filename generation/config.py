"""Typed settings for the generation layer, read from the [generation] section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
