"""Animations out as video and clips in as uploads, through the real python-telegram-bot and discord.py clients
against the fakes on 127.0.0.1, with easel's real service, queue and SQLite behind them. The animation jobs are
written here as the queue writes them (frames in a folder of their own, their MP4 beside them), so no model
draws 8 frames."""

from __future__ import annotations

import io
from pathlib import Path
from typing import AsyncIterator

import av
import discord
import numpy as np
import pytest
from PIL import Image

from bot.frontends import telegram_sending
from bot.frontends.discord import CONTENT_LIMIT
from bot.frontends.results import Video
from bot.limits import LimitsConfig
from bot.replies import Attachment
from generation.video import encode_gif, encode_mp4
from storage.history import History
from storage.images import ImageStore
from storage.params import AnimateParams
from storage.records import ImageRecord, JobRecord, JobStatus, Owner
from tests.bot.frontends import test_discord as on_discord
from tests.bot.frontends import test_telegram as on_telegram
from tests.bot.frontends.fake_discord import FakeDiscord
from tests.bot.frontends.fake_telegram import FakeMessage, FakeTelegram
from tests.conftest import delivered
from tests.helpers import eventually

WAIT = 60  # generous bounds for a busy 2-core runner, never a measurement
SIDE, FRAMES, FPS = 96, 8, 8
NOT_AN_IMAGE = "the attached file is "  # the service's refusal ("… not an image; …"): the clip reached the command

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PTB's own RetryAfter warning


def frames(count: int) -> list[Image.Image]:
    """Noise sliding to the right: an MP4 of it is some kilobytes, so a limit below that makes it re-encode."""
    base = np.random.default_rng(3).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    return [Image.fromarray(np.roll(base, 4 * k, axis=1)) for k in range(count)]


MP4_SIZE = len(encode_mp4(frames(FRAMES), FPS))  # the same frames always give the same bytes


async def add_animation(history: History, data_dir: Path, owner: Owner, drawn: int = FRAMES,
                        status: JobStatus = JobStatus.DONE) -> JobRecord:
    """A finished animation of FRAMES frames as the queue leaves it; a cancelled one with the `drawn` it has."""
    params = AnimateParams(prompt="a slow pan over hills", seed=7, steps=4, cfg=7.0, width=SIDE, height=SIDE,
                           scheduler="euler", mode="zoom", frames=FRAMES, fps=FPS, zoom=1.04)
    job = await history.add_job(owner, params)
    images = ImageStore(data_dir)
    folder = images.job_folder(job.id)
    drawings = frames(drawn)
    records = [ImageRecord(job.id, index, 7 + index, str(images.save_output(job.id, index, image, "frame", folder)))
               for index, image in enumerate(drawings)]
    images.save_file(folder, f"{job.id}.mp4", encode_mp4(drawings, FPS))
    await history.finish(job.id, status, images=records)
    return await history.get(job.id)


def frame_count(data: bytes) -> int:
    """How many frames a video file really holds, decoded."""
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def folder_of(job: JobRecord, data_dir: Path) -> str:
    """Where the job's frames are, as a chat is told: relative to the data folder."""
    return Path(job.images[0].path).parent.relative_to(data_dir).as_posix() + "/"


def spy(service, method: str) -> list[tuple]:
    """Every call of the service's `method` from now on (it still runs): what reached the commands."""
    calls, real = [], getattr(service, method)

    async def recording(*args):
        calls.append(args)
        return await real(*args)
    setattr(service, method, recording)
    return calls


# ---- Telegram ---------------------------------------------------------------------------------------
@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def telegram_owner(fake: FakeTelegram) -> Owner:
    return Owner("telegram", str(fake.alice.id), chat_id=str(fake.alice_chat.id), name="Alice")


def moving(message: FakeMessage) -> bool:
    return message.from_bot and (message.video or message.animation) is not None


async def test_telegram_an_animation_is_a_streamable_video_with_only_the_whole_job_buttons(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    fake = telegram_fake
    config = on_telegram.make_config(tmp_path, tiny_model, fake, send_png=True)
    async with await History.open(config.database) as history:  # it ended while easel was away: replayed
        job = await add_animation(history, config.storage.data_dir, telegram_owner(fake))
    async with on_telegram.easel(fake, config) as bot:
        video = await fake.wait_for_message(moving, WAIT)
        assert await delivered(bot.history, job.id)
        [send] = fake.requests_for("sendVideo")
        assert send.params["supports_streaming"] is True and send.file("video").filename == "1.mp4"
        assert (send.params["width"], send.params["height"], send.params["duration"]) == (SIDE, SIDE, 1)
        assert video.video == Path(job.images[0].path).with_name("1.mp4").read_bytes()  # the MP4 as drawn
        assert frame_count(video.video) == FRAMES
        assert video.caption.startswith("a slow pan over hills\nseed 7 · zoom of 8 frames at 8 fps")
        assert video.caption.endswith("· job #1")  # nothing to note: it went as drawn
        assert video.callback_data == ["more:1", "seed:1"]  # no U/V/zoom/pan, and no PNG of 8 frames
        assert await bot.history.job_for_message("telegram", str(fake.alice_chat.id), str(video.message_id))
        assert [m for m in fake.messages if m.from_bot] == [video]  # send_png sends no frames either


async def test_telegram_a_video_over_the_limit_is_sent_smaller_and_says_how(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = telegram_fake
    limit = MP4_SIZE // 2
    monkeypatch.setattr(telegram_sending, "OWN_SERVER_VIDEO_LIMIT", limit)  # the fake is a server of your own
    async with on_telegram.easel(fake, on_telegram.make_config(tmp_path, tiny_model, fake)) as bot:
        await add_animation(bot.history, bot.frontend.service.images.root, telegram_owner(fake))
        await fake.push(fake.text("/history #1"))
        video = await fake.wait_for_message(moving, WAIT)
        data = video.video or video.animation
        assert len(data) <= limit < MP4_SIZE and frame_count(data) == FRAMES
        assert video.caption.splitlines()[-1].endswith(f"to fit {limit / 1024:.1f} KiB")  # "re-encoded at …"
        assert video.callback_data == ["more:1", "seed:1"] and await delivered(bot.history, 1)


async def test_telegram_a_gif_where_no_mp4_fits_goes_as_an_animation(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = telegram_fake
    gif = Video("1.gif", encode_gif(frames(FRAMES), FPS, scale=0.5), "gif", "sent as GIF scaled to 48x48 to fit 1 MB",
                48, 48, 1.0)
    monkeypatch.setattr(telegram_sending, "fitted_video", lambda job, limit: gif)  # what fit_video chose
    async with on_telegram.easel(fake, on_telegram.make_config(tmp_path, tiny_model, fake)) as bot:
        await add_animation(bot.history, bot.frontend.service.images.root, telegram_owner(fake))
        await fake.push(fake.text("/history #1"))
        animation = await fake.wait_for_message(moving, WAIT)
        [send] = fake.requests_for("sendAnimation")
        assert animation.animation == gif.data and send.file("animation").filename == "1.gif"
        assert (send.params["width"], send.params["height"], send.params["duration"]) == (48, 48, 1)
        assert "supports_streaming" not in send.params and not fake.requests_for("sendVideo")
        assert animation.caption.endswith("· job #1\nsent as GIF scaled to 48x48 to fit 1 MB")
        assert animation.callback_data == ["more:1", "seed:1"] and await delivered(bot.history, 1)


async def test_telegram_a_video_nothing_fits_is_a_line_saying_where_it_is(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = telegram_fake
    monkeypatch.setattr(telegram_sending, "OWN_SERVER_VIDEO_LIMIT", 100)
    async with on_telegram.easel(fake, on_telegram.make_config(tmp_path, tiny_model, fake)) as bot:
        data_dir = bot.frontend.service.images.root
        job = await add_animation(bot.history, data_dir, telegram_owner(fake))
        await fake.push(fake.text("/history #1"))
        said = await fake.wait_for_message(lambda m: m.from_bot and "too large" in m.content, WAIT)
        assert said.content == (f"the video of job #1 is too large to send here (the limit is 100 bytes); its frames "
                                f"and video are in {folder_of(job, data_dir)} in easel's data folder")
        assert said.callback_data == ["more:1", "seed:1"]  # a new seed may still draw one that fits
        assert not fake.requests_for("sendVideo") and not fake.requests_for("sendAnimation")
        assert await delivered(bot.history, 1)


async def test_telegram_a_cancelled_animation_comes_with_the_frames_it_drew(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    fake = telegram_fake
    config = on_telegram.make_config(tmp_path, tiny_model, fake)
    async with await History.open(config.database) as history:
        await add_animation(history, config.storage.data_dir, telegram_owner(fake), drawn=3,
                            status=JobStatus.CANCELLED)
    async with on_telegram.easel(fake, config) as bot:
        video = await fake.wait_for_message(moving, WAIT)
        assert frame_count(video.video) == 3 and video.caption.splitlines()[-1] == "cancelled after 3 of 8 frames"
        assert "job #1" in video.caption and video.callback_data == ["more:1", "seed:1"]
        assert await delivered(bot.history, 1)
        assert len([m for m in fake.messages if m.from_bot]) == 1  # no "job #1 cancelled" line besides


async def test_telegram_clips_reach_the_command_and_one_too_big_is_refused_in_a_line(
    telegram_fake: FakeTelegram, tmp_path: Path, tiny_model: Path
) -> None:
    fake = telegram_fake
    config = on_telegram.make_config(tmp_path, tiny_model, fake)
    config = config.model_copy(update={"limits": LimitsConfig(max_clip_bytes=1_000_000)})
    clip = encode_mp4(frames(4), FPS)
    async with on_telegram.easel(fake, config) as bot:
        handled = spy(bot.frontend.service, "handle")
        await fake.push(fake.video(clip, caption="/animate a dancing cat --fps 8"))
        await eventually(lambda: handled, WAIT, "the video to reach the service")
        [(_, text, attachments)] = handled
        assert text == "/animate a dancing cat --fps 8" and attachments == [Attachment("clip.mp4", clip)]

        # A GIF sent from the app (Telegram makes it an MP4) with a bare caption is a clip to redraw; a video sent
        # as a file to /imagine reaches /imagine, which says it is no picture (the command decides, not the frontend).
        await fake.push(fake.video(clip, filename=None, caption="a dancing cat", animation=True))
        await fake.push(fake.document(clip, "clip.webm", "video/webm", caption="/imagine a cat"))
        await eventually(lambda: len(handled) == 3, WAIT, "both clips to reach the service")
        assert [call[1] for call in handled[1:]] == ["/animate a dancing cat", "/imagine a cat"]
        assert handled[1][2] == [Attachment("clip.mp4", clip)]
        refusal = await fake.wait_for_message(lambda m: m.from_bot and NOT_AN_IMAGE in m.content, WAIT)
        assert "is not an image (video/webm)" not in refusal.content

        downloads = len(fake.requests_for("getFile"))
        big = bytes(2_000_000)
        await fake.push(fake.video(big, filename="long.mp4", caption="/animate a long walk"))
        await fake.wait_for_message(
            lambda m: m.from_bot and m.content == "long.mp4 is 2.0 MB; the limit for clips is 1.0 MB", WAIT)
        assert len(fake.requests_for("getFile")) == downloads  # refused on what Telegram said of it
        await fake.push(fake.video(big, filename="liar.mp4", caption="/animate a long walk", file_size=1000))
        await fake.wait_for_message(lambda m: m.from_bot and m.content == (
            "liar.mp4 is over the 1.0 MB limit for clips; send a shorter or smaller clip"), WAIT)
        assert len(handled) == 3


# ---- Discord ----------------------------------------------------------------------------------------
@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_ms=500, token="fake-token") as fake, fake.pointed_at():
        yield fake


def discord_owner(fake: FakeDiscord) -> Owner:
    return Owner("discord", str(fake.alice.id), chat_id=str(fake.channel.id), name="alice")


def with_video(message) -> bool:
    return any(a.filename.endswith((".mp4", ".gif", ".webp")) for a in message.attachments)


async def test_discord_an_animation_is_one_video_with_only_the_whole_job_buttons(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    config = on_discord.make_config(tmp_path, tiny_model, fake)
    async with await History.open(config.database) as history:  # it ended while easel was away: replayed
        job = await add_animation(history, config.storage.data_dir, discord_owner(fake))
    async with on_discord.easel(fake, config) as bot:
        posted = await fake.wait_for_message(with_video, WAIT)  # in its channel: no interaction lives
        assert posted.via == "channel" and posted.content.startswith(f"<@{fake.alice.id}> **a slow pan over hills**")
        [video] = posted.attachments
        assert video.filename == "1.mp4" and video.data == Path(job.images[0].path).with_name("1.mp4").read_bytes()
        assert frame_count(video.data) == FRAMES and posted.content.endswith("· job #1")
        assert "seeds" not in posted.content  # one seed for the animation; each frame's is in its PNG
        assert posted.custom_ids == ["easel:more:1", "easel:seed:1"]
        assert await delivered(bot.history, 1)

        again = await fake.interact(fake.slash("history", {"job": 1}))  # in an interaction, within its limit
        shown = await again.message(with_video, timeout=WAIT)
        assert [a.filename for a in shown.attachments] == ["1.mp4"] and shown.custom_ids == posted.custom_ids


async def test_discord_a_video_over_the_interactions_limit_is_sent_smaller_and_says_how(
    tmp_path: Path, tiny_model: Path
) -> None:
    limit = MP4_SIZE // 2
    async with FakeDiscord(heartbeat_interval_ms=500, token="fake-token", attachment_size_limit=limit) as fake, \
            fake.pointed_at():
        async with on_discord.easel(fake, on_discord.make_config(tmp_path, tiny_model, fake)) as bot:
            await add_animation(bot.history, bot.frontend.service.images.root, discord_owner(fake))
            exchange = await fake.interact(fake.slash("history", {"job": 1}))
            shown = await exchange.message(with_video, timeout=WAIT)
            [video] = shown.attachments
            assert video.size <= limit < MP4_SIZE and frame_count(video.data) == FRAMES
            assert shown.content.splitlines()[-1].endswith(f"to fit {limit / 1024:.1f} KiB")
            assert shown.custom_ids == ["easel:more:1", "easel:seed:1"] and await delivered(bot.history, 1)


async def test_discord_a_video_nothing_fits_and_a_cancelled_one_say_so(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    config = on_discord.make_config(tmp_path, tiny_model, fake)
    data_dir = config.storage.data_dir
    async with await History.open(config.database) as history:
        whole = await add_animation(history, data_dir, discord_owner(fake))
        await add_animation(history, data_dir, discord_owner(fake), drawn=3, status=JobStatus.CANCELLED)
    monkeypatch.setattr(discord.utils, "DEFAULT_FILE_SIZE_LIMIT_BYTES", 100)  # a channel's limit, after a restart
    async with on_discord.easel(fake, config) as bot:
        said = await fake.wait_for_message(lambda m: "job #1 is too large" in m.content, WAIT)
        other = await fake.wait_for_message(lambda m: "job #2 is too large" in m.content, WAIT)
        assert "\ncancelled after 3 of 8 frames\n" in other.content
        assert said.attachments == [] and said.content.endswith(
            f"the video of job #1 is too large to send here (the limit is 100 bytes); its frames and video are in "
            f"{folder_of(whole, data_dir)} in easel's data folder") and len(said.content) <= CONTENT_LIMIT
        assert said.custom_ids == ["easel:more:1", "easel:seed:1"] and await delivered(bot.history, 1)
        monkeypatch.undo()
        again = await fake.interact(fake.slash("history", {"job": 2}))
        cancelled = await again.message(with_video, timeout=WAIT)
        assert cancelled.content.splitlines()[-1] == "cancelled after 3 of 8 frames" and "job #2" in cancelled.content
        assert frame_count(cancelled.attachments[0].data) == 3
        assert cancelled.custom_ids == ["easel:more:2", "easel:seed:2"]


async def test_discord_clips_reach_the_command_and_one_too_big_is_refused_in_a_line(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    config = on_discord.make_config(tmp_path, tiny_model, fake, limits=LimitsConfig(max_clip_bytes=1_000_000))
    clip = encode_mp4(frames(4), FPS)
    async with on_discord.easel(fake, config) as bot:
        executed = spy(bot.service, "execute")
        # /imagine takes pictures only: the clip passes the frontend and /imagine itself says no.
        video = fake.attachment("clip.mp4", clip, "video/mp4")
        refused = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": video}))
        await refused.message(lambda m: m.ephemeral and NOT_AN_IMAGE in m.content, timeout=WAIT)
        [(_, _, attachments)] = executed
        assert attachments == [Attachment("clip.mp4", clip)]

        gif = fake.attachment("wave.gif", b"GIF89a" + bytes(1_500_000), "image/gif")
        too_big = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": gif}))
        await too_big.callback(WAIT)
        assert on_discord.ephemeral_text(too_big) == "wave.gif is 1.5 MB; the limit for clips is 1.0 MB"
        liar = fake.attachment("liar.mp4", bytes(2_000_000), "video/mp4", declared_size=1000, chunked=True)
        cut = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": liar}))
        await cut.message(lambda m: m.ephemeral and m.content.startswith("liar.mp4"), timeout=WAIT)
        assert on_discord.ephemeral_text(cut) == "liar.mp4 is over the 1.0 MB limit for clips; send a shorter or smaller clip"
        assert len(executed) == 1


async def test_discord_a_zip_of_photos_reaches_train_and_one_too_big_is_refused_in_a_line(
    discord_fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    fake = discord_fake
    config = on_discord.make_config(tmp_path, tiny_model, fake, limits=LimitsConfig(max_zip_bytes=1_000_000))
    data = on_telegram.zipped_photos(_photos(tmp_path / "photos"))
    async with on_discord.easel(fake, config) as bot:
        executed = spy(bot.service, "execute")
        photos = fake.attachment("cat.zip", data, "application/zip")
        refused = await fake.interact(fake.slash("train", {"name": "cat", "image": photos}))
        # It reached /train whole, which says who may train (alice is no admin here).
        await refused.message(lambda m: m.ephemeral and "/train is for admins" in m.content, timeout=WAIT)
        [(_, _, attachments)] = executed
        assert attachments == [Attachment("cat.zip", data)]
        big = fake.attachment("big.zip", bytes(1_500_000), "application/zip")
        too_big = await fake.interact(fake.slash("train", {"name": "cat", "image": big}))
        await too_big.callback(WAIT)
        assert on_discord.ephemeral_text(too_big) == "big.zip is 1.5 MB; the limit for a zip of photos is 1.0 MB"
        assert len(executed) == 1


def _photos(folder: Path) -> Path:
    from tests.generation.test_training_pairs import write_photos

    return write_photos(folder, 8, junk=False)
