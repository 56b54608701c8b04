"""The buttons under a finished result (U k, V k, V k strong, zoom out, pan), pressed in the real discord.py and
python-telegram-bot clients against the fakes on 127.0.0.1, with easel's real service, queue and tiny model."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import AsyncIterator

import pytest
from PIL import Image

from bot.frontends.chat import NO_LONGER
from bot.limits import LimitsConfig
from generation.config import FacesConfig
from storage.records import JobStatus
from tests.bot.frontends import test_discord as on_discord
from tests.bot.frontends import test_telegram as on_telegram
from tests.bot.frontends.fake_discord import FakeDiscord, FakeMessage, snowflake
from tests.bot.frontends.fake_telegram import FakeTelegram
from tests.generation.nvidia_pickle import TINY, tiny_generator, write_nvidia_pickle

WAIT = 60  # generous bounds for a busy 2-core runner, never a measurement
SIDES = ("left", "right", "up", "down")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PTB's own RetryAfter warning


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_ms=500, token="fake-token") as fake, fake.pointed_at():
        yield fake


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def labels(message: FakeMessage) -> list[list[str]]:
    """A Discord message's buttons, row by row, by label."""
    return [[button["label"] for button in row["components"]] for row in message.components]


def size(message: FakeMessage) -> tuple[int, int]:
    [png] = [a for a in message.attachments if a.filename.endswith(".png")]
    with Image.open(io.BytesIO(png.data)) as image:
        return image.size


def with_faces(config, tmp_path: Path):
    checkpoint = write_nvidia_pickle(tmp_path / "tiny.pkl", tiny_generator(), TINY)
    return config.model_copy(update={"faces": FacesConfig(checkpoint=str(checkpoint))})


# ---- Discord ------------------------------------------------------------------------------------
async def test_discord_a_batch_of_two_shows_u_and_v_per_image_and_u2_upscales_image_2(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    async with on_discord.easel(fake, on_discord.make_config(tmp_path, tiny_model, fake)) as bot:
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "two boats", "seed": 5, "steps": 2,
                                                              "count": 2}))
        batch = await on_discord.result_of(fake, exchange)
        # All of a batch is one message: a row per action, a button per image; zoom and pan only under one picture.
        assert labels(batch) == [["U1", "U2"], ["V1", "V2"], ["V1 strong", "V2 strong"], ["5× steps", "New seed"]]
        assert batch.custom_ids == ["easel:up:1:1", "easel:up:1:2", "easel:vary:1:1:subtle", "easel:vary:1:2:subtle",
                                    "easel:vary:1:1:strong", "easel:vary:1:2:strong", "easel:more:1", "easel:seed:1"]

        click = await fake.interact(fake.click("easel:up:1:2", batch.id, user=fake.bob))
        assert (await click.callback(WAIT)).json["type"] == 4  # the press's own answer is the new job's message
        upscaled = await click.message(lambda m: on_discord.finished(m) and "job #2" in m.content, timeout=WAIT)
        job = await bot.history.get(2)
        assert job.status is JobStatus.DONE and job.params.kind == "upscale" and job.params.source_image == 2
        assert job.parent_id == 1 and job.owner.user_id == str(fake.bob.id)
        assert size(upscaled) == (128, 128)  # Lanczos, twice the 64x64 of image 2
        assert "Postprocess upscaler: Lanczos" in on_discord.parameters(upscaled)
        # One picture, with the prompt it was drawn from: every action, as Midjourney shows under an upscale.
        assert labels(upscaled) == [["U1", "V1", "V1 strong"], ["🔍 Zoom out 2×"], ["⬅", "➡", "⬆", "⬇"],
                                    ["New seed"]]  # a plain enlargement has no steps to multiply


async def test_discord_pan_zoom_and_strong_variation_buttons_queue_their_jobs(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    async with on_discord.easel(fake, on_discord.make_config(tmp_path, tiny_model, fake)) as bot:
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "a harbour", "seed": 3, "steps": 2}))
        picture = await on_discord.result_of(fake, exchange)
        assert len(picture.components) <= 5 and all(len(row["components"]) <= 5 for row in picture.components)

        pan = await fake.interact(fake.click("easel:pan:1:1:left", picture.id))
        panned = await pan.message(lambda m: on_discord.finished(m) and "job #2" in m.content, timeout=WAIT)
        job = await bot.history.get(2)
        assert job.params.kind == "pan" and job.params.direction == "left" and job.parent_id == 1
        assert size(panned) == (96, 64)  # half as wide again, on the left

        for custom_id, number in (("easel:zoom:1:1", 3), ("easel:vary:1:1:strong", 4)):
            press = await fake.interact(fake.click(custom_id, picture.id))
            await press.message(lambda m: on_discord.finished(m) and f"job #{number}" in m.content, timeout=WAIT)
        zoom, vary = await bot.history.get(3), await bot.history.get(4)
        assert (zoom.params.kind, zoom.params.factor, zoom.parent_id) == ("zoom", 2.0, 1)
        assert (vary.params.kind, vary.params.variation, vary.parent_id) == ("vary", "strong", 1)


async def test_discord_a_face_gets_only_u_and_forged_ids_get_one_line_refusals(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = discord_fake
    config = with_faces(on_discord.make_config(tmp_path, tiny_model, fake), tmp_path)
    async with on_discord.easel(fake, config) as bot:
        face = await on_discord.result_of(fake, await fake.interact(fake.slash("face", {"seed": 3})))
        assert face.custom_ids == ["easel:up:1:1", "easel:seed:1"]  # no prompt to vary, zoom or pan with

        forged = {
            "easel:up:99999999999999999999:1": "there is no job #99999999999999999999",
            "easel:up:1:3": "job #1 has 1 image; there is no image 3",
            "easel:up:1:0": "job #1 has 1 image; there is no image 0",
            "easel:vary:1:1:subtle": "job #1 is a face without a prompt; /vary redraws with the prompt of a Stable "
                                     "Diffusion picture",
            "easel:zoom:42:1": "there is no job #42",
            "easel:pan:1:1:sideways": NO_LONGER,
            "easel:up:1": NO_LONGER,
        }
        for custom_id, refusal in forged.items():
            click = await fake.interact(fake.click(custom_id, snowflake()))
            assert (await click.callback(WAIT)).json["type"] == 4  # answered at once, only to the presser
            assert on_discord.ephemeral_text(click) == refusal
        assert await bot.history.get(2) is None  # nothing was queued

        # And the bot keeps serving: the face's own U1 enlarges it.
        click = await fake.interact(fake.click("easel:up:1:1", face.id))
        upscaled = await click.message(lambda m: on_discord.finished(m) and "job #2" in m.content, timeout=WAIT)
        assert (await bot.history.get(2)).params.source_image == 1 and size(upscaled) == (2 * size(face)[0],) * 2
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# ---- Telegram ----------------------------------------------------------------------------------
async def test_telegram_each_picture_of_a_batch_has_its_own_u_v_zoom_and_pan(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    fake = telegram_fake
    async with on_telegram.easel(fake, on_telegram.make_config(tmp_path, tiny_model, fake)) as bot:
        await fake.push(fake.text("/imagine two kites --seed 5 --steps 2 --n 2"))
        await fake._wait_until(lambda: len([m for m in fake.messages if on_telegram.result(m)]) == 2, WAIT, "2 photos")
        photos = [m for m in fake.messages if on_telegram.result(m)]
        for k, photo in enumerate(photos, 1):
            assert [[b["text"] for b in row] for row in photo.inline_keyboard] == [
                [f"U{k}", f"V{k}", f"V{k} strong"], ["🔍 Zoom out 2×"], ["⬅", "➡", "⬆", "⬇"],
                ["5× steps", "New seed", "PNG"]]
            assert photo.callback_data == [f"up:1:{k}", f"vary:1:{k}:subtle", f"vary:1:{k}:strong", f"zoom:1:{k}",
                                           *(f"pan:1:{k}:{side}" for side in SIDES), "more:1", "seed:1", "png:1"]

        await fake.push(fake.callback("up:1:2", photos[1]))
        upscaled = await fake.wait_for_message(lambda m: on_telegram.result(m) and "job #2" in m.caption, WAIT)
        job = await bot.history.get(2)
        assert job.params.kind == "upscale" and job.params.source_image == 2 and job.parent_id == 1
        assert upscaled.reply_to is not None  # under its status message, which answers the pressed picture
        await fake.push(fake.callback("pan:1:2:right", photos[1], user=fake.bob))
        await fake.wait_for_message(lambda m: on_telegram.result(m) and "job #3" in m.caption, WAIT)
        pan = await bot.history.get(3)
        assert (pan.params.kind, pan.params.direction, pan.params.source_image, pan.parent_id) == ("pan", "right", 2, 1)
        answers = [answer["text"] for answer in fake.callback_answers]
        assert answers[0].startswith("queued #2") and answers[1].startswith("queued #3")


async def test_telegram_a_face_gets_only_u_and_forged_actions_are_answered_in_the_press(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = telegram_fake
    config = with_faces(on_telegram.make_config(tmp_path, tiny_model, fake), tmp_path)
    async with on_telegram.easel(fake, config) as bot:
        started = len(caplog.records)  # past the start's warning that anyone may use this bot
        await fake.push(fake.text("/face --seed 3"))
        face = await fake.wait_for_message(on_telegram.result, WAIT)
        assert face.callback_data == ["up:1:1", "seed:1", "png:1"]
        forged = {"up:99999999999999999999:1": ("there is no job #99999999999999999999", True),
                  "up:1:2": ("job #1 has 1 image; there is no image 2", True),
                  "pan:1:1:left": ("job #1 is a face without a prompt; /pan redraws with the prompt of a Stable "
                                   "Diffusion picture", True),
                  "vary:7:1:strong": ("there is no job #7", True),
                  "vary:1:1": (NO_LONGER, False), "pan:1:1:north": (NO_LONGER, False)}
        queries = {}
        for data in forged:
            update = await fake.push(fake.callback(data, face, forged=True))
            queries[update["callback_query"]["id"]] = data
        await fake._wait_until(lambda: len(fake.callback_answers) == len(forged), WAIT, "every press answered")
        answers = {queries[a["callback_query_id"]]: (a["text"], a.get("show_alert", False))
                   for a in fake.callback_answers}
        assert answers == forged
        assert await bot.history.get(2) is None

        await fake.push(fake.callback("up:1:1", face))  # still serving: the face enlarged
        await fake.wait_for_message(lambda m: on_telegram.result(m) and "job #2" in m.caption, WAIT)
        assert (await bot.history.get(2)).params.kind == "upscale"
    assert not [r for r in caplog.records[started:] if r.levelno >= logging.WARNING or r.exc_info]


async def test_discord_a_batch_larger_than_a_row_shows_the_first_five_images_buttons(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    config = on_discord.make_config(tmp_path, tiny_model, fake, limits=LimitsConfig(max_count=7))
    async with on_discord.easel(fake, config):
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "many", "steps": 1, "count": 7}))
        batch = await on_discord.result_of(fake, exchange)
        assert len(batch.attachments) == 7  # every picture arrives; buttons for the first five (5 per row)
        assert labels(batch) == [[f"U{k}" for k in range(1, 6)], [f"V{k}" for k in range(1, 6)],
                                 [f"V{k} strong" for k in range(1, 6)], ["5× steps", "New seed"]]
        press = await fake.interact(fake.click("easel:up:1:7", snowflake()))  # image 7 by hand: still fine
        await press.message(lambda m: on_discord.finished(m) and "job #2" in m.content, timeout=WAIT)


async def test_discord_the_actions_are_slash_commands_too(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    async with on_discord.easel(fake, on_discord.make_config(tmp_path, tiny_model, fake)) as bot:
        await on_discord.result_of(fake, await fake.interact(
            fake.slash("imagine", {"prompt": "two boats", "seed": 5, "steps": 2, "count": 2})))
        upscale = await fake.interact(fake.slash("upscale", {"job": "1", "image_number": 2, "scale": 1.5}))
        await on_discord.result_of(fake, upscale)
        pan = await fake.interact(fake.slash("pan", {"job": "#1", "direction": "up"}))
        await on_discord.result_of(fake, pan)
        upscaled, panned = await bot.history.get(2), await bot.history.get(3)
        assert (upscaled.params.kind, upscaled.params.source_image, upscaled.params.scale) == ("upscale", 2, 1.5)
        assert (panned.params.kind, panned.params.source_image, panned.params.direction) == ("pan", 1, "up")
        assert upscaled.parent_id == panned.parent_id == 1
        refused = await fake.interact(fake.slash("vary", {"job": "1", "image_number": 3}))
        await refused.message(lambda m: m.ephemeral and bool(m.content), WAIT)
        assert on_discord.ephemeral_text(refused) == "job #1 has 2 images; there is no image 3"
