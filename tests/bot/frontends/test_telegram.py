"""The Telegram frontend end to end: the real python-telegram-bot client against the fake Bot API on
127.0.0.1, with easel's real service, queue, tiny model and SQLite behind it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import pytest
from PIL import Image

from generation.engines import build_engines
from bot.config import Config, DefaultsConfig, QueueConfig, StorageConfig, TelegramConfig
from bot.frontends import telegram as telegram_frontend
from bot.frontends import telegram_sending
from bot.service import Service
from bot.frontends.telegram import SENT_AGAIN, WENT_WRONG, TelegramFrontend
from bot.frontends.telegram_access import PRIVATE_EASEL
from generation.config import GenerationConfig, SketchConfig
from generation.tiny import make_tiny_controlnet
from generation.queue import JobQueue, QueueLimits
from storage.history import History
from storage.images import ImageStore
from storage.records import JobStatus
from tests.bot.frontends.fake_telegram import TELEGRAM_FLOOD_LIMITS, FakeMessage, FakeTelegram
from tests.conftest import delivered
from tests.helpers import eventually

WAIT = 60  # generous bounds for a busy 2-core runner, never a measurement
# The buttons of job 1's single picture before 5× steps, New seed and PNG: U1, V1, V1 strong, zoom, pan.
ACTIONS_OF_1 = ["up:1:1", "vary:1:1:subtle", "vary:1:1:strong", "zoom:1:1",
                *(f"pan:1:1:{side}" for side in ("left", "right", "up", "down"))]

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


async def unsure_sends(history: History, job_id: int) -> int:
    """How many sends of the job's result are in doubt (0 before its first send starts)."""
    return getattr(await history.get(job_id), "unsure_sends", 0)


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
    assert photo.callback_data == [*ACTIONS_OF_1, "more:1", "seed:1", "png:1"]
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
    from tests.generation.nvidia_pickle import TINY, tiny_generator

    checkpoint = write_nvidia_pickle(tmp_path / "tiny.pkl", tiny_generator(), TINY)
    config = make_config(tmp_path, tiny_model, fake).model_copy(update={"faces": FacesConfig(checkpoint=str(checkpoint))})
    async with easel(fake, config) as bot:
        await fake.push(fake.text("/face --seed 3 --psi 0.6"))
        photo = await fake.wait_for_message(result, WAIT)
        assert "seed 3 · ψ 0.6 · job #1" in photo.caption
        assert photo.callback_data == ["up:1:1", "seed:1", "png:1"]  # no prompt to vary, no steps to multiply
        await fake.push(fake.callback("seed:1", photo))
        await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
        assert (await bot.history.get(2)).parent_id == 1


async def test_a_flood_in_one_group_slows_only_that_group_and_a_stop_does_not_wait_for_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    # Telegram's pace: 30 messages a second in all, 20 a minute per group (its "about one a second per chat"
    # is left out: short bursts pass on Telegram, and easel does not hold a chat to it).
    pace = [limit for limit in TELEGRAM_FLOOD_LIMITS if limit.scope != "chat"]
    async with FakeTelegram(flood_limits=pace) as fake:
        carol = fake.user("Carol", "carol")
        config = make_config(tmp_path, tiny_model, fake)
        async with easel(fake, config):
            await fake.push(fake.text("/imagine a lighthouse --steps 2", chat=fake.group))
            first = await fake.wait_for_message(lambda m: result(m) and m.chat is fake.group, WAIT)
            # Alice: 200 presses of New seed and 300 commands (every other one a new one) in the group.
            presses = [await fake.push(fake.callback("seed:1", first)) for _ in range(200)]
            for n in range(300):
                await fake.push(fake.text("/help" if n % 2 else f"/cancel {1000 + n}", chat=fake.group))
            await fake.push(fake.text("/imagine a quiet harbour --steps 2", user=fake.bob, chat=fake.group))
            asked = time.perf_counter()
            await fake.push(fake.text("/help", user=carol, chat=carol))  # someone else, elsewhere
            answer = await fake.wait_for_message(lambda m: m.chat.id == carol.id, WAIT)
            assert answer.content.startswith("/imagine") and answer.created - asked < 2
            bobs = await fake.wait_for_message(lambda m: result(m) and "quiet harbour" in m.caption, WAIT)
            assert bobs.chat is fake.group

            # Presses are answered by the press itself, one person's answers one at a time (in a flood, those
            # that only say "already on it" may be dropped): the first queued a job (its status message and
            # result follow). No press makes a chat message of its own.
            await fake._wait_until(lambda: len(fake.callback_answers) >= telegram_frontend.ANSWER_ROOM, WAIT, "answers")
            texts = [answer["text"] for answer in fake.callback_answers]
            queued = [text for text in texts if text.startswith("queued #2 (position 1), rerun of #1")]
            assert len(texts) <= len(presses) and len(queued) == 1 and set(texts) - set(queued) <= {
                "already on it", "too many presses at once; try again in a few seconds"}
            await fake.wait_for_message(lambda m: result(m) and "job #2" in m.caption, WAIT)
            # Alice's commands: a few answered, then one notice (after them: replies go in order), the rest ignored.
            await fake.wait_for_message(lambda m: "in a group easel takes 5 commands at once" in m.content, WAIT)
            said = [m.content for m in fake.messages_in(fake.group) if not m.photo and not m.content.startswith(
                ("queued #", "#"))]
            assert len(said) <= 6 and len([text for text in said if "5 commands at once" in text]) == 1, said
            assert len(fake.messages_in(fake.group)) <= 14  # 3 jobs (status and result each), ≤ 6 answers, a notice
            assert not [r for r in fake.requests if r.status == 429]  # and never over Telegram's pace

            for n in range(300):  # a second flood, and easel is stopped in the middle of it
                await fake.push(fake.text(f"/cancel {2000 + n}", user=fake.user(f"member {n}"), chat=fake.group))
            await fake.wait_for_request(lambda r: str(r.params.get("text")).startswith("there is no job #2"), WAIT)
            stopping = time.perf_counter()
        assert time.perf_counter() - stopping < 10


async def test_a_stop_leaves_a_waiting_result_for_the_next_start(fake: FakeTelegram, tmp_path: Path,
                                                                tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config):
        fake.fail_next("sendPhoto", 429, retry_after=60)  # the group's flood control holds its result a minute
        await fake.push(fake.text("/imagine held back --steps 2", chat=fake.group))
        await fake.wait_for_request(lambda r: r.method == "sendPhoto" and r.status == 429, WAIT)
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 10  # SIGTERM does the same: the signal cancels start(), then this
    async with easel(fake, config) as again:
        photo = await fake.wait_for_message(lambda m: result(m) and "held back" in m.caption, WAIT)
        assert photo.chat is fake.group and SENT_AGAIN not in photo.caption  # a 429 is an answer: nothing in doubt
        assert await delivered(again.history, 1)


@pytest.mark.parametrize("fault, photos, documents", [
    ("500", 1, 0), ("reset before sending", 1, 0), ("reset after sending", 2, 0), ("refused as a photo", 0, 1),
])
async def test_a_failed_result_send_heals_without_a_restart(bot: Easel, fault: str, photos: int,
                                                            documents: int) -> None:
    fake = bot.fake
    if fault == "500":
        fake.fail_next("sendPhoto", 500)
    elif fault == "refused as a photo":
        fake.fail_next("sendPhoto", 400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")
    else:
        fake.drop_next("sendPhoto", after=fault == "reset after sending")
    await fake.push(fake.text("/imagine a stubborn kite --seed 4 --steps 2"))
    await fake.wait_for_message(lambda m: m.from_bot and (m.photo or m.document) is not None, WAIT)
    assert await delivered(bot.history, 1)
    sent = [m for m in fake.messages if m.photo or m.document]
    assert (sum(1 for m in sent if m.photo), sum(1 for m in sent if m.document)) == (photos, documents)
    assert all("seed 4" in m.caption and m.callback_data == [*ACTIONS_OF_1, "more:1", "seed:1", "png:1"]
               for m in sent)
    status = next(m for m in fake.messages if m.content.startswith("#1 "))
    assert status.content == "#1 done"


async def test_a_result_that_cannot_be_sent_says_so_and_history_sends_it(bot: Easel, monkeypatch) -> None:
    monkeypatch.setattr(telegram_sending, "RETRY_DELAYS", (0.1, 0.1))
    fake = bot.fake
    fake.fail_next("sendPhoto", 502, times=3)
    fake.fail_next("sendDocument", 502, times=3)
    await fake.push(fake.text("/imagine unlucky --steps 2"))
    status = await fake.wait_for_message(lambda m: "could not be sent" in m.content, WAIT)
    assert status.content.startswith("#1 done, but its result could not be sent (Bad Gateway") \
        and status.content.endswith("/history #1 tries again")
    assert not (await bot.history.get(1)).delivered and not [m for m in fake.messages if m.photo or m.document]
    await fake.push(fake.text("/history #1"))
    await fake.wait_for_message(lambda m: result(m) and "job #1" in m.caption, WAIT)
    assert await delivered(bot.history, 1)


async def test_a_result_whose_arrival_is_in_doubt_comes_at_most_twice(fake: FakeTelegram, tmp_path: Path,
                                                                      tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config) as first:
        fake.drop_next("sendPhoto", after=True, times=2)  # sent, twice, and both answers lost
        await fake.push(fake.text("/imagine in doubt --steps 2"))
        await fake.wait_for_message(lambda m: "did not confirm" in m.content, WAIT)
        assert len([m for m in fake.messages if result(m)]) == 2 and (await first.history.get(1)).unsure_sends == 2
        # A send cut short by a stop (as by a kill): the next start sends it once more, saying so.
        fake.delay_next("sendPhoto", 3)
        await fake.push(fake.text("/imagine cut short --steps 2"))
        await eventually(lambda: unsure_sends(first.history, 2), WAIT, "its send to start")
    async with easel(fake, config) as again:
        await fake.wait_for_message(lambda m: result(m) and SENT_AGAIN in m.caption, WAIT)
        assert await delivered(again.history, 2)
        assert not (await again.history.get(1)).delivered  # in doubt already: not sent a third time
        assert len([m for m in fake.messages if result(m) and "in doubt" in m.caption]) == 2
        assert len([m for m in fake.messages if result(m) and "cut short" in m.caption]) <= 2


async def test_forged_buttons_are_answered_in_the_press_itself(bot: Easel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake = bot.fake
    await fake.push(fake.text("/imagine a harbour --steps 2"))
    photo = await fake.wait_for_message(result, WAIT)
    forged = {"more:999999999999999999999": ("there is no job #999999999999999999999", True),
              "png:4242": ("there is no job #4242", True), "seed:0": ("there is no job #0", True),
              "seed:-1": ("this button no longer does anything", False),
              "seed:²": ("this button no longer does anything", False),
              "zoom:1": ("this button no longer does anything", False)}
    queries = {}
    for data in forged:
        update = await fake.push(fake.callback(data, photo, forged=True))
        queries[update["callback_query"]["id"]] = data
    await fake._wait_until(lambda: len(fake.callback_answers) == len(forged), WAIT, "every press answered")
    answers = {queries[a["callback_query_id"]]: (a["text"], a.get("show_alert", False)) for a in fake.callback_answers}
    assert answers == forged
    assert len(fake.messages) == 2  # the status message and the result: nothing more in the chat
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_file_that_lies_about_its_size_is_cut_off_at_the_limit(bot: Easel) -> None:
    fake = bot.fake
    size = 30 * 1024 * 1024
    for declared in (1024, False):  # 1 KB, or no size at all; really 30 MB
        await fake.push(fake.document(bytes(size), "sketch.png", "image/png", caption="a cat", file_size=declared))
    refusal = "sketch.png is over the 10.0 MB limit; send a smaller image"
    await fake._wait_until(lambda: len([m for m in fake.messages if m.content == refusal]) == 2, WAIT, "two refusals")
    downloads = fake.requests_for("file")
    assert len(downloads) == 2 and all(r.params["sent"] < size for r in downloads)  # not read to the end
    assert await bot.history.get(1) is None


async def test_history_of_a_job_answers_in_the_chat_where_it_was_asked(bot: Easel) -> None:
    fake = bot.fake
    await fake.push(fake.text("/imagine a group picture --steps 2", chat=fake.group))
    await fake.wait_for_message(lambda m: result(m) and m.chat is fake.group, WAIT)
    await fake.push(fake.text("/history #1"))  # Alice, privately, about her job in the group
    again = await fake.wait_for_message(lambda m: result(m) and m.chat is fake.alice_chat, WAIT)
    assert "job #1" in again.caption and len([m for m in fake.messages_in(fake.group) if result(m)]) == 1
    await fake.push(fake.text("/history #1", user=fake.bob, chat=fake.bob_chat))  # not Bob's, not his chat
    no = await fake.wait_for_message(lambda m: m.chat is fake.bob_chat, WAIT)
    assert no.content == "there is no job #1"


async def test_a_strangers_press_is_refused_in_the_press_and_a_failing_handler_is_logged_and_told(
    fake: FakeTelegram, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, tiny_model, fake, allowed_users=(fake.alice.id,))
    async with easel(fake, config) as bot:
        await fake.push(fake.text("/imagine a harbour --steps 2"))
        photo = await fake.wait_for_message(result, WAIT)
        await fake.push(fake.callback("seed:1", photo, user=fake.bob))  # the access filters keep Bob out
        await eventually(lambda: fake.callback_answers, WAIT, "the press answered")
        assert [answer["text"] for answer in fake.callback_answers] == [PRIVATE_EASEL]
        assert await bot.history.get(2) is None

        async def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(bot.frontend.service, "execute", broken)
        await fake.push(fake.text("/queue"))
        await fake.wait_for_message(lambda m: m.from_bot and m.content == WENT_WRONG, WAIT)
    assert [r for r in caplog.records if r.name == "bot.frontends.telegram" and r.exc_info]  # PTB's error handler


async def test_a_gallery_link_asked_for_in_a_group_goes_to_the_askers_private_chat(
    fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    from bot.config import WebConfig

    config = make_config(tmp_path, tiny_model, fake).model_copy(update={"web": WebConfig(enabled=True)})
    async with easel(fake, config):
        await fake.push(fake.text("/gallery", chat=fake.group))
        private = await fake.wait_for_message(lambda m: m.from_bot and m.chat.id == fake.alice_chat.id, WAIT)
        note = await fake.wait_for_message(lambda m: m.from_bot and m.chat.id == fake.group.id, WAIT)
    assert "http://127.0.0.1:8765/gallery?t=" in private.content
    assert note.content == "sent you a private message"
    assert not any("?t=" in m.content for m in fake.messages_in(fake.group))


def zipped_photos(folder: Path) -> bytes:
    """The photos of a folder as a zip sent from a phone: in a subfolder, with macOS litter, a name that tries to
    climb out of wherever it is unpacked, and a symbolic link."""
    import stat
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in sorted(folder.iterdir()):
            archive.write(photo, f"holiday/{photo.name}")
        archive.writestr("__MACOSX/holiday/._photo-00.png", b"resource fork")
        archive.writestr("../../escaped.txt", b"not a photo")
        link = zipfile.ZipInfo("holiday/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


async def test_an_admin_trains_a_pix2pix_model_from_a_zip_sent_with_train(
    fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    from generation.config import TrainingConfig
    from generation.pix2pix import load_pix2pix
    from tests.generation.test_training_pairs import write_photos

    config = make_config(tmp_path, tiny_model, fake, admin_users=(fake.alice.id,)).model_copy(
        update={"training": TrainingConfig(slice_seconds=0.001)})
    data = zipped_photos(write_photos(tmp_path / "photos", 8, junk=False))
    async with easel(fake, config) as bot:
        await fake.push(fake.document(data, "cat.zip", "application/zip", caption="/train --name cat",
                                      user=fake.bob, chat=fake.bob_chat))
        await fake.wait_for_message(lambda m: m.from_bot and m.content == "/train is for admins: a training holds "
                                    "a share of the GPU for hours", WAIT)
        await fake.push(fake.document(data, "cat.zip", "application/zip",
                                      caption="/train --name cat --ngf 4 --iterations 4"))
        await fake.wait_for_message(result, WAIT * 2)
        job = await bot.history.get(1)
        assert job.status is JobStatus.DONE and job.params.kind == "train", job.error
    models = tmp_path / "data" / "pix2pix"
    load_pix2pix(models / "cat" / "latest_net_G.pth")
    unpacked = sorted(p.name for p in (models / "cat" / "photos").iterdir())
    assert unpacked == sorted([*(p.name for p in (tmp_path / "photos").iterdir()), "escaped.txt"])
    assert [p.parent for p in tmp_path.rglob("escaped.txt")] == [models / "cat" / "photos"]  # nowhere else
