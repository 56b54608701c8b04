"""Memory profiles are pure planning: CUDA cards are described by their VRAM, no GPU needed."""

from __future__ import annotations

import pytest

from generation.memory import AUTO_THRESHOLDS, GiB, MemoryPlan, plan_memory, resolve_dtype, resolve_profile

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

    from generation.memory import apply_plan

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    wanted = plan_memory("speed", "cuda", 24 * GiB, xformers_available=True)
    assert wanted.attention == "xformers"
    applied = apply_plan(pipe, wanted)  # xformers is not importable here, as on a broken install
    assert applied.attention == "sdpa" and applied.profile == "speed"
