"""The Telegram frontend end to end: the real python-telegram-bot client against the fake Bot API on
127.0.0.1, with easel's real service, queue, tiny model and SQLite behind it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import pytest
from PIL import Image

from bot.app import build_engines
from bot.config import Config, DefaultsConfig, QueueConfig, StorageConfig, TelegramConfig
from bot.service import Service
from bot.telegram_app import TelegramFrontend
from generation.config import GenerationConfig, SketchConfig
from generation.tiny import make_tiny_controlnet
from generation.queue import JobQueue, QueueLimits
from storage.history import History
from storage.images import ImageStore
from storage.records import JobStatus
from tests.bot.fake_telegram import FakeMessage, FakeTelegram
from tests.conftest import delivered

WAIT = 60  # generous bounds for a busy 2-core runner, never a measurement

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PTB's own RetryAfter warning


@dataclass
class Easel:
    fake: FakeTelegram
    history: History
    frontend: TelegramFrontend


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def make_config(tmp_path: Path, tiny_model: Path, fake: FakeTelegram, **telegram: object) -> Config:
    controlnet = make_tiny_controlnet(tiny_model, tmp_path / "controlnet")
    return Config(
        sketch=SketchConfig(controlnet=str(controlnet)),
        storage=StorageConfig(data_dir=tmp_path / "data"),
        generation=GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
        defaults=DefaultsConfig(width=64, height=64, steps=4),
        queue=QueueConfig(max_per_user=10, max_total=50),
        telegram=TelegramConfig(token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url,
                                **telegram),
    )


@contextlib.asynccontextmanager
async def easel(fake: FakeTelegram, config: Config) -> AsyncIterator[Easel]:
    async with await History.open(config.database) as history:
        images = ImageStore(config.storage.data_dir)
        async with JobQueue(history, images, build_engines(config), QueueLimits(max_per_user=10)) as queue:
            async with TelegramFrontend(Service(config, history, images, queue), config) as frontend:
                running = asyncio.create_task(frontend.start())
                try:
                    await fake.wait_for_polling(WAIT)
                    yield Easel(fake, history, frontend)
                finally:
                    frontend.stop()
                    await asyncio.wait_for(running, WAIT)


@pytest.fixture
async def bot(fake: FakeTelegram, tmp_path: Path, tiny_model: Path) -> AsyncIterator[Easel]:
    async with easel(fake, make_config(tmp_path, tiny_model, fake)) as running:
        yield running


def sketch() -> bytes:
    image = Image.new("RGB", (96, 64), "white")
    image.paste((20, 20, 20), (10, 10, 80, 14))  # a pencil line
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def result(message: FakeMessage) -> bool:
    return message.from_bot and message.photo is not None


async def test_commands_are_registered_and_a_captioned_photo_comes_back_drawn(bot: Easel) -> None:
    fake = bot.fake
    assert {command["command"] for command in fake.commands} >= {"imagine", "rerun", "history", "cancel", "queue",
                                                                  "help"}
    fake.fail_next("sendPhoto", error_code=429, retry_after=1)  # flood control on the result
    await fake.push(fake.photo(sketch(), caption="a red sports car --seed 7"))
    status = await fake.wait_for_message(lambda m: m.from_bot and m.content.startswith("queued #1"), WAIT)
    assert "· scribble" in status.content and "a red sports car" in status.content  # a drawing: sketch-to-photo
    photo = await fake.wait_for_message(result, WAIT)
    assert "seed 7" in photo.caption and "job #1" in photo.caption and photo.reply_to == status.message_id
    assert photo.callback_data == ["more:1", "seed:1", "png:1"]
    sends = [r for r in fake.requests if r.method == "sendPhoto"]
    assert [r.status for r in sends] == [429, 200]  # waited retry_after and sent again
    assert await delivered(bot.history, 1)
    job = await bot.history.get(1)
    assert job.status is JobStatus.DONE and job.params.seed == 7 and job.params.kind == "sketch"

    await fake.push(fake.text("/rerun steps=8", reply_to=photo))  # a reply acts on that very result
    second = await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
    child = await bot.history.get(2)
    assert child.parent_id == 1 and child.params.steps == 8 and "8 steps" in second.caption


async def test_replies_find_their_job_after_a_restart(fake: FakeTelegram, tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config):
        await fake.push(fake.text("/imagine a lighthouse --seed 3 --steps 2"))
        photo = await fake.wait_for_message(result, WAIT)
    async with easel(fake, config) as again:
        await fake.push(fake.text("steps=6", reply_to=photo))  # a bare key=value reply reruns too
        await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
        child = await again.history.get(2)
        assert child.parent_id == 1 and child.params.steps == 6 and child.params.seed == 3


async def test_buttons_rerun_and_send_the_png_with_its_parameters(bot: Easel) -> None:
    fake = bot.fake
    await fake.push(fake.text("/imagine a harbour --seed 5 --steps 2"))
    photo = await fake.wait_for_message(result, WAIT)
    await fake.push(fake.callback("more:1", photo, user=fake.bob))
    more = await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
    assert "10 steps" in more.caption and (await bot.history.get(2)).parent_id == 1
    await fake.push(fake.callback("png:1", photo))
    document = await fake.wait_for_message(lambda m: m.from_bot and m.document is not None, WAIT)
    with Image.open(io.BytesIO(document.document)) as png:
        assert "Seed: 5" in png.info["parameters"] and document.filename == "1-0.png"


async def test_mistakes_get_clear_replies_and_the_bot_keeps_serving(bot: Easel) -> None:
    fake = bot.fake
    await fake.push(fake.document(b"%PDF-1.7 not a picture", "notes.pdf", "application/pdf", caption="a cat"))
    await fake.wait_for_message(
        lambda m: m.from_bot and m.content == "notes.pdf is not an image (application/pdf); send a photo, or a PNG, "
                                              "JPEG, WebP, GIF or BMP file", WAIT)
    big = fake.document(b"\0" * (11 * 1024 * 1024), "huge.png", "image/png", caption="a cat")
    await fake.push(big)
    await fake.wait_for_message(lambda m: m.from_bot and m.content == "huge.png is 11.5 MB; the limit is 10.0 MB", WAIT)
    await fake.push(fake.text("/frobnicate"))
    await fake.wait_for_message(lambda m: m.from_bot and m.content.startswith("unknown command /frobnicate;"), WAIT)
    await fake.push(fake.photo(sketch()))
    await fake.wait_for_message(lambda m: m.from_bot and m.content.startswith("Add a caption"), WAIT)
    downloads = [r for r in fake.requests if r.method == "getFile"]
    assert downloads == []  # nothing refused was downloaded
    await fake.push(fake.text("/imagine still serving --steps 2"))
    await fake.wait_for_message(result, WAIT)


async def test_groups_see_only_commands_and_replies_and_strangers_get_one_no(
    fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    config = make_config(tmp_path, tiny_model, fake, allowed_users=(fake.alice.id,))
    async with easel(fake, config):
        await fake.push(fake.text("just chatting in the group", chat=fake.group))
        await fake.push(fake.text("/imagine@easel_bot a cat --steps 2", chat=fake.group))
        await fake.wait_for_message(lambda m: result(m) and m.chat.id == fake.group.id, WAIT)
        for _ in range(2):
            await fake.push(fake.text("/imagine a dog", user=fake.bob, chat=fake.bob_chat))
        no = await fake.wait_for_message(lambda m: m.from_bot and m.chat.id == fake.bob_chat.id, WAIT)
        assert no.content.startswith("Sorry, this easel is private")
        await fake.push(fake.text("/queue"))
        await fake.wait_for_message(lambda m: m.from_bot and m.content == "the queue is empty", WAIT)
    to_bob = [m for m in fake.messages if m.chat.id == fake.bob_chat.id]
    assert len(to_bob) == 1  # one polite refusal, not one per message
    assert not any("just chatting" in m.content for m in fake.messages if m.from_bot)


async def test_a_recovered_job_and_a_failed_send_reach_the_chat_later(fake: FakeTelegram, tmp_path: Path,
                                                                       tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config):
        await fake.push(fake.text("/imagine interrupted --steps 500 --size 128x128"))
        await fake.wait_for_message(lambda m: m.from_bot and "/500" in m.content, WAIT)
    async with easel(fake, config) as again:  # the job runs again after the restart, its result arrives
        photo = await fake.wait_for_message(lambda m: result(m) and "interrupted" in m.caption, WAIT * 2)
        assert photo.chat.id == fake.alice_chat.id and await delivered(again.history, 1)
        fake.fail_next("sendPhoto", error_code=403)  # say the user had blocked the bot for a while
        await fake.push(fake.text("/imagine lost --steps 2"))
        await fake.wait_for_request(lambda r: r.method == "sendPhoto" and r.status == 403, WAIT)
        assert (await again.history.get(2)).status is JobStatus.DONE and not (await again.history.get(2)).delivered
        await fake.push(fake.text("/history #2"))
        await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
        assert await delivered(again.history, 2)


async def test_easel_run_with_the_token_in_the_environment(fake: FakeTelegram, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n[defaults]\nwidth = 64\nheight = 64\n'
        f'[telegram]\nbase_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\n'
        f'[sketch]\ncontrolnet = "{make_tiny_controlnet(tiny_model, tmp_path / "controlnet")}"\n', encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "EASEL_TELEGRAM_TOKEN": fake.token, "HF_HUB_OFFLINE": "1"},
    )
    try:
        await fake.wait_for_polling(WAIT)
        await fake.push(fake.photo(sketch(), caption="a red sports car --steps 2"))
        photo = await fake.wait_for_message(result, WAIT)
        assert "job #1" in photo.caption and "seed " in photo.caption
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), WAIT)
    err = (await process.stderr.read()).decode()
    assert code == 0, err
    assert fake.token not in err and fake.token not in (tmp_path / "data" / "easel.log").read_text()


async def test_face_is_a_command_with_its_own_buttons(fake: FakeTelegram, tmp_path: Path, tiny_model: Path) -> None:
    from generation.config import FacesConfig
    from tests.generation.nvidia_pickle import write_nvidia_pickle
    from tests.generation.test_faces import TINY, tiny_generator

    checkpoint = write_nvidia_pickle(tmp_path / "tiny.pkl", tiny_generator(), TINY)
    config = make_config(tmp_path, tiny_model, fake).model_copy(update={"faces": FacesConfig(checkpoint=str(checkpoint))})
    async with easel(fake, config) as bot:
        await fake.push(fake.text("/face --seed 3 --psi 0.6"))
        photo = await fake.wait_for_message(result, WAIT)
        assert "seed 3 · ψ 0.6 · job #1" in photo.caption
        assert photo.callback_data == ["seed:1", "png:1"]  # no steps to multiply on a face
        await fake.push(fake.callback("seed:1", photo))
        await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
        assert (await bot.history.get(2)).parent_id == 1
