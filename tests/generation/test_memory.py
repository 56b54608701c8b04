"""Memory profiles are pure planning: CUDA cards are described by their VRAM, no GPU needed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from generation.diffusion.memory import (
    AUTO_THRESHOLDS,
    VAE_BYTES_PER_PIXEL_16BIT,
    GiB,
    MemoryPlan,
    needs_tiling,
    plan_memory,
    resolve_dtype,
    resolve_profile,
)

CARD_24GB = 24 * GiB


@pytest.mark.parametrize(
    ("profile", "attention", "slicing", "offload"),
    [
        ("speed", "sdpa", False, "none"),
        ("balanced", "sdpa", True, "none"),
        ("low", "sdpa", True, "model"),
        ("minimal", "sliced", True, "sequential"),
    ],
)
def test_each_profile_on_a_cuda_card(profile: str, attention: str, slicing: bool, offload: str) -> None:
    plan = plan_memory(profile, "cuda", CARD_24GB)
    assert plan == MemoryPlan(
        profile=profile, dtype="float16", attention=attention, vae_slicing=slicing, vae_tiling=slicing, offload=offload,
    )


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (80 * GiB, "speed"),
        (10 * GiB, "speed"),
        (10 * GiB - 1, "balanced"),
        (8 * GiB, "balanced"),
        (6 * GiB, "balanced"),
        (6 * GiB - 1, "low"),
        (4 * GiB, "low"),
        (int(3.5 * GiB), "low"),
        (int(3.5 * GiB) - 1, "minimal"),
        (2 * GiB, "minimal"),
        (0, "minimal"),
    ],
)
def test_auto_picks_a_profile_by_total_vram(total: int, expected: str) -> None:
    assert resolve_profile("auto", "cuda", total) == expected
    assert plan_memory("auto", "cuda", total).profile == expected


def test_auto_thresholds_go_from_most_to_least_memory() -> None:
    sizes = [size for size, _ in AUTO_THRESHOLDS]
    assert sizes == sorted(sizes, reverse=True)


def test_explicit_profile_wins_over_vram() -> None:
    assert resolve_profile("minimal", "cuda", 80 * GiB) == "minimal"
    assert resolve_profile("speed", "cuda", 2 * GiB) == "speed"


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_without_a_cuda_card_is_speed(device: str) -> None:
    assert resolve_profile("auto", device, None) == "speed"
    assert resolve_profile("auto", "cuda", None) == "speed"  # unknown size: do not guess small


@pytest.mark.parametrize("profile", ["auto", "speed", "balanced", "low", "minimal"])
def test_cpu_is_float32_and_never_offloads(profile: str) -> None:
    plan = plan_memory(profile, "cpu", None)
    assert plan.dtype == "float32"
    assert plan.offload == "none"
    assert plan.attention in ("sdpa", "sliced")


@pytest.mark.parametrize("profile", ["low", "minimal"])
def test_mps_never_offloads_and_uses_half_precision(profile: str) -> None:
    plan = plan_memory(profile, "mps", None)
    assert (plan.offload, plan.dtype) == ("none", "float16")


def test_xformers_only_when_installed_and_on_cuda() -> None:
    assert plan_memory("speed", "cuda", CARD_24GB, xformers_available=True).attention == "xformers"
    assert plan_memory("balanced", "cuda", CARD_24GB, xformers_available=True).attention == "xformers"
    assert plan_memory("speed", "cuda", CARD_24GB, xformers_available=False).attention == "sdpa"
    assert plan_memory("speed", "cpu", None, xformers_available=True).attention == "sdpa"
    # minimal slices attention to the smallest pieces whatever is installed
    assert plan_memory("minimal", "cuda", CARD_24GB, xformers_available=True).attention == "sliced"


@pytest.mark.parametrize(
    ("requested", "device", "expected"),
    [
        ("auto", "cpu", "float32"),
        ("auto", "cuda", "float16"),
        ("auto", "mps", "float16"),
        ("bfloat16", "cuda", "bfloat16"),
        ("float32", "cuda", "float32"),
        ("bfloat16", "cpu", "bfloat16"),
    ],
)
def test_dtype(requested: str, device: str, expected: str) -> None:
    assert resolve_dtype(requested, device) == expected
    assert plan_memory("speed", device, None, dtype=requested).dtype == expected


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown memory profile 'turbo'"):
        plan_memory("turbo", "cuda", CARD_24GB)


def test_a_broken_or_missing_xformers_falls_back_to_sdpa(tiny_model) -> None:
    from diffusers import StableDiffusionPipeline

    from generation.diffusion.memory import apply_plan

    from generation.diffusion.loading import xformers_available

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    wanted = plan_memory("speed", "cuda", 24 * GiB, xformers_available=True)
    assert wanted.attention == "xformers"
    applied = apply_plan(pipe, wanted)
    # Where xformers is installed and a CUDA card is there, it works; everywhere else (not importable,
    # no card for its kernels) the plan falls back to SDPA instead of failing every job.
    works = xformers_available() and torch.cuda.is_available()
    assert applied.attention == ("xformers" if works else "sdpa") and applied.profile == "speed"


@pytest.mark.parametrize(
    ("profile", "free", "expected"),
    [
        ("speed", 1 * GiB, False),  # speed never tiles: it would rather run out of memory than change pixels
        ("balanced", 24 * GiB, False),  # room to spare: the same pixels as speed
        ("balanced", 1 * GiB, True),  # 1536x1536 does not fit in 1 GiB untiled
        ("low", 1 * GiB, True),
        ("minimal", None, False),  # CPU/MPS: no card memory to run out of
    ],
)
def test_tiling_only_where_the_profile_allows_it_and_the_image_would_not_fit(profile, free, expected) -> None:
    plan = plan_memory(profile, "cuda", CARD_24GB)
    assert needs_tiling(plan, 1536, 1536, 1, free) is expected


def test_tiling_weighs_the_images_decoded_at_once() -> None:
    balanced = plan_memory("balanced", "cuda", CARD_24GB)  # VAE slicing: one image at a time
    unsliced = dataclasses.replace(balanced, vae_slicing=False)
    need_one = 704 * 384 * VAE_BYTES_PER_PIXEL_16BIT
    assert not needs_tiling(balanced, 704, 384, 4, need_one + 1)
    assert needs_tiling(unsliced, 704, 384, 4, need_one + 1)
    assert not needs_tiling(unsliced, 704, 384, 4, 4 * need_one + 1)
    fp32 = dataclasses.replace(balanced, dtype="float32")
    assert needs_tiling(fp32, 704, 384, 1, need_one + 1)  # twice the bytes per value
