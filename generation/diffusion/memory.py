"""Memory profiles: how a pipeline is fitted onto the card (dtype, attention, VAE slicing, offload)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

GiB = 1024**3

Offload = Literal["none", "model", "sequential"]


@dataclass(frozen=True)
class MemoryPlan:
    """What a resolved profile does to a pipeline; recorded with every job."""

    profile: str
    dtype: str
    attention: str
    vae_slicing: bool
    vae_tiling: bool  # may the VAE work in tiles when an image would not fit otherwise (it changes the pixels)
    offload: Offload


# auto picks the fastest profile that fits an SD-1.5 job in fp16 at 512–768 px with room to spare.
AUTO_THRESHOLDS = ((10 * GiB, "speed"), (6 * GiB, "balanced"), (3.5 * GiB, "low"))


def resolve_profile(requested: str, device_type: str, total_memory: int | None) -> str:
    """`auto` becomes a concrete profile chosen by the card's total memory; others pass through."""
    if requested != "auto":
        return requested
    if device_type != "cuda" or total_memory is None:
        return "speed"  # CPU and MPS have no separate card memory to offload from
    for threshold, profile in AUTO_THRESHOLDS:
        if total_memory >= threshold:
            return profile
    return "minimal"


def resolve_dtype(requested: str, device_type: str) -> str:
    if requested != "auto":
        return requested
    return "float32" if device_type == "cpu" else "float16"


def plan_memory(
    requested: str,
    device_type: str,
    total_memory: int | None,
    *,
    dtype: str = "auto",
    xformers_available: bool = False,
) -> MemoryPlan:
    """Turn a profile name and the machine into concrete settings."""
    profile = resolve_profile(requested, device_type, total_memory)
    fast_attention = "xformers" if (xformers_available and device_type == "cuda") else "sdpa"
    # Offloading moves weights between host and card; it only means something on a CUDA card.
    can_offload = device_type == "cuda"
    if profile == "speed":
        attention, slicing, offload = fast_attention, False, "none"
    elif profile == "balanced":
        attention, slicing, offload = fast_attention, True, "none"
    elif profile == "low":
        attention, slicing, offload = fast_attention, True, "model" if can_offload else "none"
    elif profile == "minimal":
        attention, slicing, offload = "sliced", True, "sequential" if can_offload else "none"
    else:
        raise ValueError(f"unknown memory profile {profile!r}")
    return MemoryPlan(
        profile=profile,
        dtype=resolve_dtype(dtype, device_type),
        attention=attention,
        vae_slicing=slicing,
        vae_tiling=slicing,
        offload=offload,
    )


def apply_plan(pipe, plan: MemoryPlan) -> MemoryPlan:
    """Apply the attention and VAE settings of a plan; returns the plan as applied.

    Offload is applied per run by the engine. An xformers build that does not match torch fails
    here; SDPA is as fast on torch 2, so fall back to it rather than fail every job.
    """
    if plan.attention == "xformers":
        try:
            pipe.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # ImportError, a CUDA/torch mismatch, a missing kernel…
            log.warning("xformers is installed but does not work (%s); using SDPA attention", exc)
            plan = dataclasses.replace(plan, attention="sdpa")
    elif plan.attention == "sliced":
        pipe.enable_attention_slicing("max")
    if plan.vae_slicing:
        pipe.vae.enable_slicing()
    return plan  # tiling is decided per job: see needs_tiling


# Peak memory of an SD VAE decode (and img2img encode) per output pixel in 16-bit floats, with room to
# spare: the last decoder stages hold several 128–256-channel feature maps at full resolution.
VAE_BYTES_PER_PIXEL_16BIT = 3 * 1024


def needs_tiling(plan: MemoryPlan, width: int, height: int, count: int, free_memory: int | None) -> bool:
    """Tile the VAE only where the profile allows it and the untiled pass would not fit in free memory.

    Tiling changes the pixels once a side passes the VAE's tile size, so it must not depend on the
    profile alone: the same seed and settings draw the same picture on any card that has the room.
    """
    if not plan.vae_tiling or free_memory is None:  # CPU and MPS: no separate card memory to run out of
        return False
    images_at_once = 1 if plan.vae_slicing else count
    per_pixel = VAE_BYTES_PER_PIXEL_16BIT * (2 if plan.dtype == "float32" else 1)
    return width * height * images_at_once * per_pixel > free_memory
