"""Fixtures shared by every test package: a tiny random-weight Stable Diffusion model, built offline."""

from __future__ import annotations

import os
import socket

# The tiny model's tensors are far too small to gain from intra-op threads, and on a 2-core runner
# OpenMP workers spinning against the event loop, aiosqlite and other processes made a 50-step run
# go from under a second to half a minute. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from generation.tiny import make_tiny_controlnet, make_tiny_model  # noqa: E402
from storage.history import History  # noqa: E402
from storage.params import Img2ImgParams, JobParams, Txt2ImgParams  # noqa: E402

torch.set_num_threads(1)


# ---- the `slow` marker -------------------------------------------------------------------------
# `pytest -m "not slow"` is the quick run (under a minute on 2 cores); plain `pytest` runs everything.
# Slow means: it starts a process (`easel`/`python -m bot.cli`, redis-server, a model load in a fresh
# interpreter) or it takes many seconds on its own. Marked here, by these rules, so test modules stay as
# they are; a test may also say @pytest.mark.slow itself.
SLOW_FIXTURES = {
    "redis_server",  # a real redis-server, and `easel worker` processes on top (tests/bot/test_redis.py)
    "hub_loads",  # model loads in a subprocess against a fake hub (tests/generation/test_model_load.py)
    "sketches", "staged",  # seconds of simulated phone photos to score the sketch clean-up (test_scribble.py)
}
SLOW_MODULES = {
    "test_app.py",  # `easel console` processes sent SIGINT/SIGTERM
    "test_startup.py",  # `easel run` processes against refusing or unreachable platforms
    "test_worker_cli.py",  # `easel worker` processes
    "test_redis.py",  # redis-server and workers
    "test_gpu_benchmark.py",  # benchmarks/gpu.py in a subprocess
}
SLOW_TESTS = {  # module::test, for modules that are quick apart from these
    "test_console.py::test_sigkill_mid_job_loses_nothing",  # `easel console` processes, from here down
    "test_console.py::test_a_second_easel_on_the_same_data_folder_is_refused",
    "test_console.py::test_bytes_that_are_not_utf8_on_a_pipe_neither_hang_nor_crash_the_console",
    "test_console.py::test_ctrl_c_at_the_prompt_stops_easel_as_ctrl_c_does_anywhere",
    "test_discord.py::test_easel_run_with_the_token_in_the_environment",  # `easel run`
    "test_telegram.py::test_easel_run_with_the_token_in_the_environment",  # `easel run`
    "test_discord.py::test_a_job_recovered_after_a_restart_reaches_its_channel",  # a 500-step job, restarted
    "test_diffusion.py::test_a_compiled_unet_draws_what_the_plain_one_draws_and_compiles_once_for_repeated_jobs",
    # A second or more each on a 2-core machine (measured with --durations): pacing, flood limits, restarts,
    # several drawings. Together they would double the quick run.
    "test_telegram.py::test_a_recovered_job_and_a_failed_send_reach_the_chat_later",
    "test_telegram.py::test_a_flood_in_one_group_slows_only_that_group_and_a_stop_does_not_wait_for_it",
    "test_telegram.py::test_commands_are_registered_and_a_captioned_photo_comes_back_drawn",
    "test_telegram.py::test_a_result_whose_arrival_is_in_doubt_comes_at_most_twice",
    "test_telegram.py::test_a_stop_leaves_a_waiting_result_for_the_next_start",
    "test_telegram.py::test_a_failed_result_send_heals_without_a_restart",
    "test_fake_telegram.py::test_failures_limits_and_formatting",
    "test_fake_telegram.py::test_the_real_application_polls_downloads_retries_and_edits",
    "test_discord.py::test_progress_is_shown_with_previews_but_not_more_than_every_1_5_s",
    "test_fake_discord.py::test_edits_updates_dms_retries_and_a_resumed_gateway",
    "test_console.py::test_sketch_prints_the_result_and_its_control_image_and_reruns_pixel_for_pixel",
    "test_console.py::test_rerun_by_seed_redraws_identical_pixels_and_records_parent",
    "test_service.py::test_a_coloured_drawing_goes_to_image_to_image_and_says_so",
    "test_service.py::test_a_big_upload_is_decoded_off_the_event_loop_and_stored_no_bigger_than_max_side",
    "test_images.py::test_concurrent_saves_of_the_same_image_all_succeed",
    "test_diffusion.py::test_a_job_that_asks_for_tiling_gets_it_records_it_and_repeats_its_pixels",
    "test_diffusion.py::test_speed_and_balanced_draw_identical_pixels_where_tiling_is_not_needed",
    "test_diffusion.py::test_a_scheduler_choice_does_not_leak_into_the_next_job",
    "test_sketch.py::test_offload_hooks_once_and_switching_kinds_redraws_the_same_pixels",
    "test_single_file.py::test_a_single_file_draws_the_same_pixels_as_its_diffusers_folder",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if (item.path.name in SLOW_MODULES or name in SLOW_TESTS
                or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers folder (model_index.json, unet, vae, text encoder, tokenizer) written once per session."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SDXL pipeline folder: two text encoders, text_time size conditioning."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-sdxl"), family="sdxl")


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers ControlNet folder shaped for the tiny model, as control_v11p_sd15_scribble is for SD 1.5."""
    return make_tiny_controlnet(tiny_model, tmp_path_factory.mktemp("tiny-controlnet"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the history database goes; a module may override it (e.g. with a folder not made yet)."""
    return tmp_path / "history.sqlite3"


@pytest.fixture
async def history(db_path: Path):
    """A real History on a fresh SQLite file, closed after the test."""
    async with await History.open(db_path) as history:
        yield history


def params(**changes: object) -> JobParams:
    """The one test job: a small text→image job, or image→image when kind, strength or input is given."""
    drawing: dict[str, object] = dict(
        prompt="a lighthouse at dusk", negative_prompt="", seed=42, steps=2, cfg=7.0, width=64, height=64,
        count=1, scheduler="dpmpp_2m",
    )
    kind = changes.pop("kind", None)
    if kind == "img2img" or "strength" in changes or "input_sha256" in changes:
        return Img2ImgParams(**{**drawing, "strength": 0.75, "input_sha256": "0" * 64, **changes})
    return Txt2ImgParams(**{**drawing, **changes})


async def delivered(history, job_id: int, seconds: float = 60) -> bool:
    """Whether the job is marked delivered, waiting (bounded) for the write that follows a frontend's send."""
    import asyncio

    for _ in range(int(seconds / 0.02)):
        job = await history.get(job_id)
        if job is not None and job.delivered:
            return True
        await asyncio.sleep(0.02)
    return False


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on now: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
