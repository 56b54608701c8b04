"""The Discord frontend end to end: the real discord.py client against the fake Discord on 127.0.0.1, with
easel's real service, queue, tiny model and SQLite behind it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import pytest
from PIL import Image

from bot.frontends import discord as discord_frontend
from generation.engines import build_engines
from bot.config import Config, DefaultsConfig, DiscordConfig, QueueConfig, StorageConfig
from bot.frontends.discord import DiscordFrontend
from bot.frontends.pacing import clip
from bot.limits import LimitsConfig
from bot.service import Service
from generation.config import GenerationConfig, SketchConfig
from generation.queue import JobQueue, QueueLimits
from storage.history import History
from storage.images import ImageStore
from storage.records import JobStatus, Owner
from tests.bot.frontends.fake_discord import RESET, FakeDiscord, FakeMessage, FakeRequest, snowflake
from tests.conftest import delivered
from tests.helpers import eventually

WAIT = 60  # seconds: generous bounds for a busy 2-core runner, never a measurement


@dataclass
class Easel:
    fake: FakeDiscord
    config: Config
    service: Service
    history: History
    frontend: DiscordFrontend


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_ms=500, token="fake-token") as fake, fake.pointed_at():
        yield fake


def make_config(tmp_path: Path, tiny_model: Path, fake: FakeDiscord, controlnet: Path | None = None,
                limits: LimitsConfig = LimitsConfig(), **discord: object) -> Config:
    return Config(
        limits=limits,
        sketch=SketchConfig(controlnet=str(controlnet)) if controlnet else SketchConfig(),
        storage=StorageConfig(data_dir=tmp_path / "data"),
        generation=GenerationConfig(device="cpu", model=str(tiny_model), preview_every=1),
        defaults=DefaultsConfig(width=64, height=64, steps=4),
        queue=QueueConfig(max_per_user=10, max_total=50),
        discord=DiscordConfig(token="fake-token", guild_ids=(fake.guild.id,), **discord),
    )


@contextlib.asynccontextmanager
async def easel(fake: FakeDiscord, config: Config) -> AsyncIterator[Easel]:
    """easel with its Discord frontend, logged in and synced; everything stops on the way out."""
    async with await History.open(config.database) as history:
        images = ImageStore(config.storage.data_dir)
        async with JobQueue(history, images, build_engines(config), QueueLimits(max_per_user=10)) as queue:
            service = Service(config, history, images, queue)
            async with DiscordFrontend(service, config) as frontend:
                running = asyncio.create_task(frontend.start())
                try:
                    await fake.wait_for_request(lambda r: r.method == "PUT" and "/commands" in r.path, WAIT)
                    await fake.wait_ready(WAIT)
                    yield Easel(fake, config, service, history, frontend)
                finally:
                    await frontend.client.close()
                    await asyncio.wait_for(running, WAIT)


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path, tiny_model: Path) -> AsyncIterator[Easel]:
    async with easel(fake, make_config(tmp_path, tiny_model, fake)) as running:
        yield running


def parameters(message: FakeMessage) -> str:
    [png] = [a for a in message.attachments if a.filename.endswith(".png")]
    with Image.open(io.BytesIO(png.data)) as image:
        return image.info["parameters"]


def finished(message: FakeMessage) -> bool:
    return any(a.filename.endswith(".png") and a.filename != "preview.png" for a in message.attachments)


async def result_of(fake: FakeDiscord, exchange, seconds: float = WAIT) -> FakeMessage:
    return await exchange.message(finished, timeout=seconds)


def messages_of(config: Config, job_id: int) -> list[tuple[str, str]]:
    """(channel, message) of every Discord message recorded as showing the job, oldest first: read from the
    database itself (easel only ever asks the other way round, which job a message shows)."""
    with contextlib.closing(sqlite3.connect(config.database)) as db:
        return db.execute("SELECT chat_id, message_id FROM messages WHERE job_id=? AND platform='discord' "
                          "ORDER BY rowid", (job_id,)).fetchall()


def carries_result(request: FakeRequest) -> bool:
    """A request that sends a job's result (its PNGs), not a progress edit."""
    return any(u.filename.endswith(".png") and u.filename != "preview.png" for u in request.files)


def ephemeral_text(exchange) -> str:
    texts = [m.content for m in exchange.messages if m.ephemeral and not m.deleted and m.content]
    assert texts, exchange.messages
    return texts[-1]


async def test_imagine_is_deferred_at_once_then_delivers_the_png_with_its_seed(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "a red lighthouse", "seed": 42, "steps": 4}))
    callback = await exchange.callback(WAIT)
    assert callback.json["type"] == 5  # deferred: "easel is thinking…"
    result = await result_of(fake, exchange)
    text = parameters(result)
    assert "Seed: 42" in text and "Steps: 4," in text and text.startswith("a red lighthouse\n")
    assert "a red lighthouse" in result.content and "seed 42" in result.content and "job #1" in result.content
    assert result.custom_ids == ["easel:up:1:1", "easel:vary:1:1:subtle", "easel:vary:1:1:strong", "easel:zoom:1:1",
                                 *(f"easel:pan:1:1:{side}" for side in ("left", "right", "up", "down")),
                                 "easel:more:1", "easel:seed:1"]
    assert await delivered(bot.history, 1)
    job = await bot.history.get(1)
    assert job.status is JobStatus.DONE and job.owner.user_id == str(fake.alice.id)
    assert messages_of(bot.config, 1) == [(str(fake.channel.id), str(result.id))]

    rerun = await fake.interact(fake.slash("rerun", {"ref": "42", "steps": 8}))
    again = await result_of(fake, rerun)
    assert "Steps: 8," in parameters(again) and "Seed: 42" in parameters(again)
    child = await bot.history.get(2)
    assert child.parent_id == 1 and child.params.steps == 8
    # Settings that are not options of /rerun's own (Discord allows 25) are typed as key=value in `settings`.
    more = await fake.interact(fake.slash("rerun", {"ref": "#2", "settings": "cfg=9 steps=3"}))
    assert "Steps: 3," in parameters(await result_of(fake, more)) and "CFG scale: 9" in parameters(await result_of(fake, more))
    rerun = bot.fake.command("rerun", bot.fake.guild.id)
    assert len(rerun["options"]) <= 25 and "settings" in {option["name"] for option in rerun["options"]}


async def test_progress_is_shown_with_previews_but_not_more_than_every_1_5_s(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "a slow boat --size 192x192", "steps": 500}))
    result = await result_of(fake, exchange)
    states = result.history
    progress = [state for state in states if re.search(r"\d+/500 \(\d+%\)", state["content"])]
    assert progress, states  # step, total and percentage while it ran
    assert any(name == "preview.png" for state in progress for name, _ in state["attachments"])
    times = [state["time"] for state in states[1:]]
    assert all(later - earlier >= 1.4 for earlier, later in zip(times, times[1:-1])), times  # the last is the result


async def test_a_batch_arrives_in_one_message_with_every_seed(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "boats", "seed": 7, "count": 3}))
    result = await result_of(fake, exchange)
    assert [a.filename for a in result.attachments] == ["1-0.png", "1-1.png", "1-2.png"]
    assert "seeds 7, 8, 9" in result.content


async def test_buttons_work_after_a_restart(fake: FakeDiscord, tmp_path: Path, tiny_model: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config) as first:
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "a harbour", "seed": 3, "steps": 2}))
        result = await result_of(fake, exchange)
    async with easel(fake, config) as second:  # a new process, the same data folder
        click = await fake.interact(fake.click("easel:more:1", result.id, user=fake.bob))
        assert (await click.callback(WAIT)).json["type"] == 4  # the press's own answer is the new job's message
        child_message = await click.message(lambda m: finished(m) and "job #2" in m.content, timeout=WAIT)
        assert "Steps: 10," in parameters(child_message)  # five times the 2 steps
        child = await second.history.get(2)
        assert child.parent_id == 1 and child.owner.user_id == str(fake.bob.id)
        monkeypatch.setattr(discord_frontend, "ANSWER_WITHIN", 0)  # as if queueing were slow: deferred first
        seeded = await fake.interact(fake.click("easel:seed:1", result.id))
        assert (await seeded.callback(WAIT)).json["type"] == 5
        assert "Seed: 3," not in parameters(await seeded.message(lambda m: finished(m) and "job #3" in m.content,
                                                                 timeout=WAIT))
        assert (await second.history.get(3)).parent_id == 1
    assert first is not second


async def test_mistakes_get_private_answers_and_the_bot_keeps_serving(
    fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    other = fake.guilds[0].channels[1]
    config = make_config(tmp_path, tiny_model, fake, allowed_channels=(fake.channel.id,))
    async with easel(fake, config) as bot:
        notes = fake.attachment("notes.txt", b"not a picture", "text/plain")
        refused = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": notes}))
        assert (await refused.callback(WAIT)).json["type"] == 4  # answered at once, only to them
        assert ephemeral_text(refused) == "notes.txt is not an image (text/plain); attach a PNG, JPEG, WebP, GIF or BMP"

        elsewhere = await fake.interact(fake.slash("imagine", {"prompt": "a cat"}, channel_id=other.id))
        await elsewhere.callback(WAIT)
        assert ephemeral_text(elsewhere).startswith("easel is not enabled in this channel; use it in <#")

        slow = await fake.interact(fake.slash("imagine", {"prompt": "alice's", "steps": 400}))
        await slow.message(lambda m: "#1" in m.content, timeout=WAIT)
        not_yours = await fake.interact(fake.slash("cancel", {"job": 1}, user=fake.bob))
        await not_yours.message(lambda m: m.ephemeral and "not yours" in m.content, timeout=WAIT)
        assert ephemeral_text(not_yours) == "job #1 is not yours; only its owner or an admin can cancel it"

        button = await fake.interact(fake.click("easel:cancel:1", slow.original.id, user=fake.bob))
        await button.message(lambda m: m.ephemeral and "not yours" in m.content, timeout=WAIT)
        big = fake.attachment("huge.png", b"\x89PNG" + b"\0" * 11_000_000, "image/png")
        too_big = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": big}))
        await too_big.callback(WAIT)
        assert ephemeral_text(too_big) == "huge.png is 11.0 MB; the limit is 10.0 MB"

        too_many = await fake.interact(fake.slash("imagine", {"prompt": "a cat --steps 100000"}))
        await too_many.message(lambda m: m.ephemeral, timeout=WAIT)
        assert ephemeral_text(too_many) == "steps must be 1–500, got 100000"

        mine = await fake.interact(fake.slash("cancel", {"job": 1}))
        await mine.message(lambda m: m.ephemeral and "cancel" in m.content, timeout=WAIT)
        await slow.message(lambda m: "cancelled" in m.content, timeout=WAIT)
        assert (await bot.history.get(1)).status is JobStatus.CANCELLED

        fine = await fake.interact(fake.slash("imagine", {"prompt": "still here", "steps": 2}))
        await result_of(fake, fine)


async def test_a_disallowed_server_is_told_why(fake: FakeDiscord, tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake, allowed_guilds=(12345,))
    async with easel(fake, config) as bot:
        refused = await fake.interact(fake.slash("imagine", {"prompt": "a cat"}))
        await refused.callback(WAIT)
        assert ephemeral_text(refused) == "easel is not enabled in this server"
        assert await bot.history.recent(Owner("discord", str(fake.alice.id)), 5) == []  # nothing was queued


async def test_a_result_whose_token_expired_is_posted_in_the_channel_mentioning_its_owner(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "a late one", "steps": 30}))
    await exchange.message(lambda m: "#1" in m.content, timeout=WAIT)
    fake.expire(exchange.token)  # as if 15 minutes had passed
    posted = await fake.wait_for_message(lambda m: m.via == "channel" and finished(m), WAIT)
    assert posted.channel_id == fake.channel.id and posted.content.startswith(f"<@{fake.alice.id}> ")
    assert "Seed: " in parameters(posted) and await delivered(bot.history, 1)


async def test_a_result_that_cannot_be_posted_stays_undelivered_and_history_sends_it_again(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "lost", "steps": 20}))
    await exchange.message(lambda m: "#1" in m.content, timeout=WAIT)
    fake.expire(exchange.token)
    fake.forbid_channel(fake.channel.id)
    await fake.wait_for_request(lambda r: r.method == "POST" and r.status == 403, WAIT)
    job = await bot.history.get(1)
    assert job.status is JobStatus.DONE and not job.delivered  # kept for a later try
    note = await fake.wait_for_message(lambda m: m.channel_id == fake.dm_channel(fake.alice).id, WAIT)
    assert note.content == (f"easel could not post the result of job #1 in <#{fake.channel.id}>; "
                            "/history job:1 sends it again")  # told, in a DM
    again = await fake.interact(fake.slash("history", {"job": 1}))
    assert "Seed: " in parameters(await result_of(fake, again))
    assert await delivered(bot.history, 1)


async def test_a_job_recovered_after_a_restart_reaches_its_channel(fake: FakeDiscord, tmp_path: Path,
                                                                   tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, fake)
    async with easel(fake, config) as first:
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "interrupted", "steps": 500}))
        await exchange.message(lambda m: "/500" in m.content, timeout=WAIT)
    # Stopped mid-job: the next start runs it again and posts the result where it was asked.
    async with easel(fake, config):
        posted = await fake.wait_for_message(lambda m: m.via == "channel" and finished(m), WAIT * 2)
    assert posted.content.startswith(f"<@{fake.alice.id}> ") and "interrupted" in posted.content
    assert first is not None


async def test_slash_options_and_their_ranges_come_from_the_grammar_and_the_limits(bot: Easel) -> None:
    from bot import commands

    imagine = bot.fake.command("imagine", bot.fake.guild.id)
    options = {option["name"]: option for option in imagine["options"]}
    assert options["steps"]["max_value"] == bot.config.limits.max_steps
    assert options["count"]["max_value"] == bot.config.limits.max_count
    assert options["cfg"]["max_value"] == bot.config.limits.max_cfg
    assert {choice["value"] for choice in options["scheduler"]["choices"]} >= {"dpmpp_2m", "euler_a"}
    for name in set(options) - {"prompt", "image"}:
        assert options[name]["description"] == clip(commands.option(name).help, 100)
    assert "hires-strength" in options  # a name with a hyphen, as Discord allows (a Python parameter does not)
    fake = bot.fake
    exchange = await fake.interact(fake.slash("imagine", {"prompt": "a mill", "steps": 2, "hires": 1.5,
                                                          "hires-strength": 0.75}))
    await exchange.message(lambda m: "#1" in m.content, timeout=WAIT)
    assert (await bot.history.get(1)).params.hires_strength == 0.75

    # /animate: its mode menu lists its own modes (the option is /sketch's too), yes/no settings are booleans.
    animate = {option["name"]: option for option in bot.fake.command("animate", bot.fake.guild.id)["options"]}
    assert [choice["value"] for choice in animate["mode"]["choices"]] == ["sweep", "zoom", "video"]
    sketch = {option["name"]: option for option in bot.fake.command("sketch", bot.fake.guild.id)["options"]}
    assert [choice["value"] for choice in sketch["mode"]["choices"]] == ["scribble", "img2img", "pix2pix"]
    assert animate["reverse"]["type"] == 5 and animate["from"]["max_value"] == 1 and len(animate) <= 25

    # model: autocompletes the configured models' names as they are typed (an AUTOCOMPLETE interaction, type 4).
    assert options["model"].get("autocomplete") is True
    for typed, names in (("DEF", ["default"]), ("xl", [])):
        asking = fake.slash("imagine", {"prompt": "a mill", "model": typed})
        asking["type"] = 4
        next(o for o in asking["data"]["options"] if o["name"] == "model")["focused"] = True
        answer = await (await fake.interact(asking)).callback(WAIT)
        assert answer.json["type"] == 8
        assert [choice["value"] for choice in answer.json["data"]["choices"]] == names


async def test_easel_run_with_the_token_in_the_environment(fake: FakeDiscord, tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "config.toml").write_text(
        f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n[defaults]\nwidth = 64\nheight = 64\n'
        f'[discord]\nguild_ids = [{fake.guild.id}]\napi_base = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n',
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "EASEL_DISCORD_TOKEN": "fake-token", "HF_HUB_OFFLINE": "1"},
    )
    try:
        await fake.wait_for_request(lambda r: r.method == "PUT" and "/commands" in r.path, WAIT)
        await fake.wait_ready(WAIT)
        exchange = await fake.interact(fake.slash("imagine", {"prompt": "a red lighthouse", "seed": 42, "steps": 4}))
        assert "Seed: 42" in parameters(await result_of(fake, exchange))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # how a service manager stops it
        code = await asyncio.wait_for(process.wait(), WAIT)
    err = (await process.stderr.read()).decode()
    assert code == 0, err
    assert "fake-token" not in err and "fake-token" not in (tmp_path / "data" / "easel.log").read_text()


async def test_a_result_over_the_upload_limit_is_sent_as_a_jpeg_and_the_png_stays(tmp_path: Path,
                                                                                 tiny_model: Path) -> None:
    async with FakeDiscord(token="fake-token", attachment_size_limit=6000) as fake, fake.pointed_at():
        async with easel(fake, make_config(tmp_path, tiny_model, fake)) as bot:
            exchange = await fake.interact(fake.slash("imagine", {"prompt": "noise compresses badly", "steps": 2}))
            result = await exchange.message(lambda m: any(a.filename.endswith(".jpg") for a in m.attachments), WAIT)
            [sent] = result.attachments
            assert sent.filename == "1-0.jpg" and sent.size <= 6000
            with Image.open(io.BytesIO(sent.data)) as image:
                assert image.format == "JPEG"
            job = await bot.history.get(1)
            assert Path(job.images[0].path).stat().st_size > 6000  # the PNG with its parameters, untouched


async def test_sketch_takes_a_drawing_and_follows_it(fake: FakeDiscord, tmp_path: Path, tiny_model: Path,
                                                    tiny_controlnet: Path) -> None:
    from PIL import ImageDraw

    drawing = Image.new("RGB", (160, 120), (240, 236, 225))
    ImageDraw.Draw(drawing).rectangle((40, 30, 120, 100), outline=(60, 60, 60), width=3)
    buffer = io.BytesIO()
    drawing.save(buffer, format="JPEG")
    async with easel(fake, make_config(tmp_path, tiny_model, fake, controlnet=tiny_controlnet)) as bot:
        photo = fake.attachment("box.jpg", buffer.getvalue(), "image/jpeg")
        exchange = await fake.interact(fake.slash("sketch", {"image": photo, "prompt": "a wooden crate",
                                                            "seed": 4, "steps": 2, "control": 0.8}))
        text = parameters(await result_of(fake, exchange))
        assert "Seed: 4" in text and 'ControlNet 0: "Module: none' in text and "Weight: 0.8" in text
        job = await bot.history.get(1)
        assert job.params.kind == "sketch" and job.params.mode == "scribble" and job.params.control_scale == 0.8


async def test_face_is_a_slash_command_too(bot: Easel) -> None:
    fake = bot.fake
    exchange = await fake.interact(fake.slash("face", {"seed": 21}))
    result = await result_of(fake, exchange)  # no [faces] checkpoint here: Stable Diffusion draws a portrait
    assert "Seed: 21" in parameters(result)
    assert any("no [faces] checkpoint" in state["content"] for state in result.history)
    mixed = await fake.interact(fake.slash("face", {"seed": 1, "mix": 2}))
    await mixed.callback(WAIT)
    await mixed.message(lambda m: m.ephemeral, timeout=WAIT)
    assert ephemeral_text(mixed) == "mixing and editing faces need a StyleGAN2 checkpoint: set [faces] checkpoint"
    truncated = await fake.interact(fake.slash("face", {"seed": 21, "psi": 0.5}))  # a portrait has no ψ
    await truncated.callback(WAIT)
    await truncated.message(lambda m: m.ephemeral, timeout=WAIT)
    assert ephemeral_text(truncated).startswith("--psi needs a StyleGAN2 checkpoint")


async def test_direct_messages_obey_the_same_rule_as_the_server(fake: FakeDiscord, tmp_path: Path,
                                                               tiny_model: Path) -> None:
    artists = fake.guild.add_role("artists", fake.bob)
    async with easel(fake, make_config(tmp_path, tiny_model, fake, allowed_roles=(artists,))) as bot:
        # Alice lacks the role: refused in the server, in a DM, and on a button in a DM.
        refusals = []
        for payload in (fake.slash("imagine", {"prompt": "a cat"}),
                        fake.slash("imagine", {"prompt": "a cat"}, guild_id=None),
                        fake.click("easel:seed:1", snowflake(), channel_id=fake.dm_channel(fake.alice).id)):
            refused = await fake.interact(payload)
            assert (await refused.callback(WAIT)).json["type"] == 4  # answered at once, only to her
            refusals.append(ephemeral_text(refused))
        assert refusals[0] == f"you need one of these roles to use easel here: <@&{artists}>"
        assert refusals[1] == refusals[2] == ("easel takes direct messages only from people who may use it in its "
                                              "server; use it there")
        assert await bot.history.recent(Owner("discord", str(fake.alice.id)), 5) == []
        # Bob holds it in the server: his DM is drawn and answered in the DM.
        mine = await fake.interact(fake.slash("imagine", {"prompt": "a boat", "steps": 2}, user=fake.bob,
                                              guild_id=None))
        assert (await result_of(fake, mine)).channel_id == fake.dm_channel(fake.bob).id
        assert (await bot.history.get(1)).owner.user_id == str(fake.bob.id)
        looked_up = {r.path for r in fake.requests if "/members/" in r.path}
        assert looked_up == {f"/guilds/{fake.guild.id}/members/{user.id}" for user in (fake.alice, fake.bob)}

    async with easel(fake, make_config(tmp_path, tiny_model, fake, dms=False)):
        closed = await fake.interact(fake.slash("queue", user=fake.bob, guild_id=None))
        await closed.callback(WAIT)
        assert ephemeral_text(closed) == "easel does not take commands in direct messages; use it in a server"


async def test_a_connection_reset_on_the_final_send_is_tried_again_then_posted_in_the_channel(
    bot: Easel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = bot.fake
    caplog.set_level(logging.WARNING, logger="bot.frontends.discord")
    monkeypatch.setattr(discord_frontend, "SEND_RETRIES", (0.05, 0.05))
    bot.frontend._failures.every = 0  # log every failure, however close together
    # Reset once: the edit is tried again and lands in the job's own message.
    fake.reset_next("PATCH", r"/messages/@original$", matching=carries_result)
    once = await fake.interact(fake.slash("imagine", {"prompt": "once", "steps": 2}))
    assert "job #1" in (await result_of(fake, once)).content
    # Reset on every try: the result is posted in the channel instead, mentioning its owner.
    fake.reset_next("PATCH", r"/messages/@original$", times=3, matching=carries_result)
    await fake.interact(fake.slash("imagine", {"prompt": "always", "steps": 2}))
    posted = await fake.wait_for_message(lambda m: m.via == "channel" and finished(m), WAIT)
    assert posted.content.startswith(f"<@{fake.alice.id}> ") and "job #2" in posted.content
    assert await delivered(bot.history, 2)
    assert len([r for r in fake.requests if r.status == RESET]) == 4
    lines = [r.getMessage() for r in caplog.records if "could not post job" in r.getMessage()]
    assert len(lines) == 4 and all("ServerDisconnectedError" in line for line in lines), lines
    assert lines[0].startswith(f"could not post job #1's result in Discord channel {fake.channel.id}")


async def test_a_forged_button_number_is_no_job_and_no_traceback(bot: Easel, caplog: pytest.LogCaptureFixture) -> None:
    fake = bot.fake
    for number in ("999999999999999999999", str(2**63)):
        click = await fake.interact(fake.click(f"easel:more:{number}", snowflake()))
        assert (await click.callback(WAIT)).json["type"] == 4
        assert ephemeral_text(click) == f"there is no job #{number}"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_an_attachment_is_cut_off_at_the_upload_limit_whatever_size_it_declared(
    fake: FakeDiscord, tmp_path: Path, tiny_model: Path
) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(20_000_000)  # says 1 kB
    config = make_config(tmp_path, tiny_model, fake, limits=LimitsConfig(max_upload_bytes=1_000_000))
    async with easel(fake, config) as bot:
        for chunked in (True, False):  # streamed without a length, or with a Content-Length that tells
            liar = fake.attachment(f"liar-{chunked}.png", data, "image/png", declared_size=1000, chunked=chunked)
            exchange = await fake.interact(fake.slash("imagine", {"prompt": "a cat", "image": liar}))
            await exchange.message(lambda m: m.ephemeral and bool(m.content), WAIT)
            assert ephemeral_text(exchange) == f"{liar.filename} is over the 1.0 MB limit; send a smaller image"
            assert exchange.original.deleted  # the public "thinking…" is gone
            if chunked:
                assert fake.served[liar.id] < len(data)  # easel hung up rather than read it all
        assert await bot.history.recent(Owner("discord", str(fake.alice.id)), 5) == []


async def test_history_job_answers_where_it_was_asked_and_private_answers_are_asked_as_private(
    bot: Easel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, other = bot.fake, bot.fake.guild.channels[1]
    await result_of(fake, await fake.interact(fake.slash("imagine", {"prompt": "a mill", "steps": 2})))
    again = await fake.interact(fake.slash("history", {"job": 1}, channel_id=other.id))
    shown = await result_of(fake, again)
    assert shown.channel_id == other.id and "job #1" in shown.content
    assert not [m for m in fake.messages if m.via == "channel"]  # nothing went to the job's own channel
    nosy = await fake.interact(fake.slash("history", {"job": 1}, channel_id=other.id, user=fake.bob))
    await nosy.message(lambda m: m.ephemeral and bool(m.content), WAIT)
    assert ephemeral_text(nosy) == "there is no job #1"  # not his, not asked here

    asked = []
    execute = bot.service.execute

    async def spy(owner: Owner, command: object, attachments: object = ()) -> object:
        asked.append((type(command).__name__, owner.private))
        return await execute(owner, command, attachments)

    monkeypatch.setattr(bot.service, "execute", spy)
    for name in ("queue", "history"):
        answer = await fake.interact(fake.slash(name))
        await answer.message(lambda m: m.ephemeral and bool(m.content), WAIT)
    assert asked == [("ShowQueue", True), ("ShowHistory", True)]


async def test_a_command_that_fails_is_logged_and_the_person_told_privately(
    bot: Easel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(bot.service, "execute", broken)
    answer = await bot.fake.interact(bot.fake.slash("queue"))
    await answer.message(lambda m: m.ephemeral and bool(m.content), WAIT)
    assert ephemeral_text(answer) == "something went wrong with that command; the details are in the log"
    assert [r for r in caplog.records if "/queue failed" in r.getMessage() and r.exc_info]  # the tree's on_error


async def test_help_longer_than_a_discord_message_arrives_whole_in_several(bot: Easel) -> None:
    from bot.commands import help_text

    fake = bot.fake
    expected = help_text(bot.service.config.limits)
    assert len(expected) > 2000  # more than one Discord message holds
    asked = await fake.interact(fake.slash("help", {}))
    await eventually(lambda: sum(len(m.content) + 1 for m in asked.messages if m.ephemeral and m.content)
                     > len(expected), WAIT, "every part of /help")
    parts = [m.content for m in asked.messages if m.ephemeral and m.content]
    assert all(len(part) <= 2000 for part in parts) and "\n".join(parts) == expected
