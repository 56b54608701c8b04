"""The limit rules, in their one place: every refusal names the setting, the range and the value."""

from __future__ import annotations

import pytest

from bot.config import LimitsConfig
from bot.limits import MAX_SEED, CommandError, check_params

from tests.conftest import params


LIMITS = LimitsConfig()


def job(**changes: object):
    return params(**{"prompt": "a cat", "steps": 30, "width": 512, "height": 512, **changes})


BASE = job()


def limit_error(limits: LimitsConfig = LIMITS, **changes: object) -> str:
    with pytest.raises(CommandError) as caught:
        check_params(job(**changes), limits)
    return str(caught.value)


def test_params_within_limits_pass():
    check_params(BASE, LIMITS)
    edge = job(steps=500, cfg=30.0, count=4, seed=MAX_SEED - 3, width=1536, height=1536,
               kind="img2img", strength=1.0, prompt="x" * 1000, negative_prompt="y" * 1000)
    check_params(edge, LIMITS)
    check_params(job(width=2048, height=64, cfg=0.0, seed=0, steps=1), LIMITS)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(steps=100000), "steps must be 1–500, got 100000"),
        (dict(steps=10_000_000), "steps must be 1–500, got 10000000"),
        (dict(steps=0), "steps must be 1–500, got 0"),
        (dict(cfg=31.5), "cfg must be 0–30, got 31.5"),
        (dict(cfg=-1.0), "cfg must be 0–30, got -1"),
        (dict(count=5), "n must be 1–4, got 5"),
        (dict(count=0), "n must be 1–4, got 0"),
        (dict(seed=-1), f"seed must be 0–{MAX_SEED}, got -1"),
        (dict(seed=MAX_SEED + 1), f"seed must be 0–{MAX_SEED}, got {MAX_SEED + 1}"),
        # seeds s … s+n-1 must all fit, so the top of the range shrinks with the count.
        (dict(seed=MAX_SEED, count=2), f"seed must be 0–{MAX_SEED - 1}, got {MAX_SEED}"),
        (dict(seed=MAX_SEED - 2, count=4), f"seed must be 0–{MAX_SEED - 3}, got {MAX_SEED - 2}"),
        (dict(kind="img2img", strength=0.0), "strength must be above 0 and at most 1, got 0"),
        (dict(kind="img2img", strength=1.5), "strength must be above 0 and at most 1, got 1.5"),
        (dict(width=99999, height=3), "width must be a multiple of 8 from 64 to 2048, got 99999"),
        (dict(height=3), "height must be a multiple of 8 from 64 to 2048, got 3"),
        (dict(width=516), "width must be a multiple of 8 from 64 to 2048, got 516"),
        (dict(width=56), "width must be a multiple of 8 from 64 to 2048, got 56"),
        (dict(width=2048, height=2048), "2048x2048 is 4,194,304 pixels; the limit is 2,359,296 (e.g. 1536 square)"),
        (dict(prompt="x" * 1001), "the prompt is 1001 characters; the limit is 1000"),
        (dict(negative_prompt="y" * 1200), "the negative prompt is 1200 characters; the limit is 1000"),
        (dict(scheduler="karras"), "unknown scheduler 'karras'; choose one of: dpmpp_2m, dpmpp_2m_karras, euler, "
                                   "ddim, pndm, unipc, heun, euler_a (ancestral)"),
    ],
)
def test_limit_refusals_name_the_range(changes, message):
    assert limit_error(**changes) == message


@pytest.mark.parametrize(
    "steps, strength, message",
    [
        (1, 0.5, "image→image runs int(steps × strength) steps: 1 × 0.5 gives 0; use at least 2 steps or a higher strength"),
        (3, 0.3, "image→image runs int(steps × strength) steps: 3 × 0.3 gives 0; use at least 4 steps or a higher strength"),
        (9, 0.1, "image→image runs int(steps × strength) steps: 9 × 0.1 gives 0; use at least 10 steps or a higher strength"),
        (500, 0.001, "image→image runs int(steps × strength) steps: 500 × 0.001 gives 0; "
                     "use a higher strength (at most 500 steps are allowed)"),
    ],
)
def test_img2img_that_would_run_no_steps_is_refused(steps, strength, message):
    assert limit_error(kind="img2img", steps=steps, strength=strength) == message


def test_img2img_with_one_step_to_run_passes():
    for steps, strength in ((2, 0.5), (4, 0.3), (10, 0.1), (1, 1.0)):
        check_params(job(kind="img2img", steps=steps, strength=strength), LIMITS)
    check_params(job(steps=1), LIMITS)  # text→image runs every step it is given


def test_limits_come_from_the_config():
    tight = LimitsConfig(max_steps=50, max_cfg=12.5, max_count=2, max_side=1024, max_pixels=512 * 768,
                         max_prompt_chars=10)
    assert limit_error(tight, steps=51) == "steps must be 1–50, got 51"
    assert limit_error(tight, cfg=13.0) == "cfg must be 0–12.5, got 13"
    assert limit_error(tight, count=3) == "n must be 1–2, got 3"
    assert limit_error(tight, width=1032) == "width must be a multiple of 8 from 64 to 1024, got 1032"
    assert limit_error(tight, width=1024, height=512) == "1024x512 is 524,288 pixels; the limit is 393,216 (e.g. 624 square)"
    assert limit_error(tight, prompt="a cat on a mat") == "the prompt is 14 characters; the limit is 10"


def test_a_prompt_weight_that_is_not_a_number_is_refused_before_queueing():
    message = limit_error(prompt="a (red:1.2.3) lighthouse")
    assert "1.2.3" in message and "not a number" in message
    assert limit_error(negative_prompt="(blurry:1..2)").startswith("the weight '1..2' in the prompt")
