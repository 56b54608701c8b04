"""The service end to end: real History (SQLite in tmp_path), real ImageStore, real JobQueue and the
real DiffusionEngine on the tiny random-weight model. Tests that need jobs to wait never start the queue."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import service as service_module
from bot.commands import Imagine, Settings, ShowQueue, help_text
from bot.config import AccessConfig, LimitsConfig, QueueConfig
from bot.formatting import describe
from bot.limits import MAX_SEED
from bot.replies import Attachment, Reply
from generation.queue import EventKind, JobEvent
from storage.infotext import read_parameters
from storage.params import Txt2ImgParams
from storage.records import JobStatus, Owner
from storage.uploads import open_upload
from tests.helpers import blank_png
from tests.bot.rig import ALICE, BOB, CAROL, CONSOLE, DEFAULTS, FAST, Rig, png


def photo(width: int, height: int) -> bytes:
    """A smooth JPEG, like a camera's: small as a file, big once decoded."""
    across = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    down = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = across, down, across // 2 + down // 2
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def inputs(rig: Rig) -> list[str]:
    folder = rig.service.config.storage.data_dir / "inputs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---- /imagine, run for real --------------------------------------------------------------------
async def test_imagine_queues_a_job_that_finishes_with_images_remembering_their_seeds(rig):
    await rig.queue.start()
    reply = await rig.ok(ALICE, f"/imagine a lighthouse at dusk --seed 1234 --n 2 {FAST}")
    assert reply.text == "queued #1 (position 1)"
    assert reply.job.id == 1 and reply.job.owner == ALICE
    assert reply.job.params.seed == 1234 and reply.job.params.count == 2

    done = await rig.finished(1)
    assert done.kind is EventKind.DONE, done.error
    job = await rig.history.get(1)
    assert job.status is JobStatus.DONE and job.run is not None
    assert job.run.model == rig.service.config.generation.model
    assert [(image.index, image.seed) for image in job.images] == [(0, 1234), (1, 1235)]
    for image in job.images:
        assert Path(image.path).is_file()
        assert pixels(image.path).shape == (64, 64, 3)
        text = read_parameters(Path(image.path))
        assert text.startswith("a lighthouse at dusk\nNegative prompt: blurry\n")
        assert f"Seed: {image.seed}," in text
        assert "Steps: 2, Sampler: Euler, Schedule type: Uniform, CFG scale: 5.5" in text and "Size: 64x64" in text

    history = (await rig.say(ALICE, "/history")).text
    lines = history.splitlines()
    assert lines[0] == "#1 done: a lighthouse at dusk — seed 1234 · 2 steps · cfg 5.5 · 64x64"
    assert lines[1:] == [f"    {Path(image.path).name}  seed {image.seed}" for image in job.images]  # no server path in a chat


async def test_rerun_with_no_argument_redraws_your_last_job_pixel_for_pixel(rig):
    await rig.queue.start()
    await rig.ok(ALICE, f"/imagine a red barn --seed 77 {FAST}")
    await rig.ok(BOB, f"/imagine not alice's --seed 5 {FAST}")  # someone else's later job is not "your last"
    assert (await rig.finished(1)).kind is EventKind.DONE

    reply = await rig.ok(ALICE, "/rerun")
    assert reply.text.endswith(", rerun of #1")
    assert reply.job.parent_id == 1
    assert (await rig.finished(reply.job.id)).kind is EventKind.DONE
    first, again = await rig.history.get(1), await rig.history.get(reply.job.id)
    assert again.params == first.params.replace(vae_tiling=first.run.vae_tiling)  # and tiles as #1 did
    assert again.parent_id == 1 and again.owner == ALICE
    assert np.array_equal(pixels(first.images[0].path), pixels(again.images[0].path))
    assert first.images[0].path != again.images[0].path

    history = (await rig.say(ALICE, "/history 1")).text
    assert history.splitlines()[0] == f"#{again.id} done: a red barn — seed 77 · 2 steps · cfg 5.5 · 64x64 · rerun of #1"
    assert len(history.splitlines()) == 2  # the one job and its one image


async def test_img2img_from_an_attachment(rig):
    upload = png(256, 128, seed=3)
    await rig.queue.start()
    reply = await rig.ok(ALICE, "/imagine a red barn --seed 5 --steps 4", Attachment("barn.png", upload))
    params = reply.job.params
    assert params.kind == "img2img"
    assert params.strength == DEFAULTS.strength
    # 2:1 at the default 128x128 pixel count, in multiples of 64.
    assert (params.width, params.height) == (192, 64)
    stored = rig.service.images.input_path(params.input_sha256)
    assert stored == rig.service.config.storage.data_dir / "inputs" / f"{params.input_sha256}.png"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == params.input_sha256
    assert np.array_equal(pixels(stored), pixels(io.BytesIO(upload)))

    done = await rig.finished(reply.job.id)
    assert done.kind is EventKind.DONE, done.error
    job = await rig.history.get(reply.job.id)
    assert job.params == params
    assert pixels(job.images[0].path).shape == (64, 192, 3)
    text = read_parameters(Path(job.images[0].path))
    assert "Denoising strength: 0.6" in text and "Size: 192x64" in text
    # img2img runs int(steps × strength) steps.
    assert {event.total for event in rig.events if event.kind is EventKind.PROGRESS} == {2}
    assert "strength 0.6" in (await rig.say(ALICE, "/history")).text


async def test_cancel_a_running_job(rig):
    await rig.queue.start()
    await rig.ok(ALICE, "/imagine a slow one --size 64x64 --steps 500")
    await rig.event(1, EventKind.STARTED)
    assert re.fullmatch(r"running: #1 \(alice\) \d+/500 a slow one", rig.service.queue_text(ALICE))
    await rig.event(1, EventKind.PROGRESS)
    done = int(re.search(r" (\d+)/500 ", rig.service.queue_text(ALICE))[1])
    assert done >= 1  # the running job's steps show as they happen
    assert rig.service.pending("discord")[0].id == 1

    refused = await rig.say(BOB, "/cancel #1")
    assert refused.error and refused.text == "job #1 is not yours; only its owner or an admin can cancel it"
    reply = await rig.say(ALICE, "/cancel")
    assert reply == Reply("cancelling #1…")
    assert (await rig.finished(1)).kind is EventKind.CANCELLED
    job = await rig.history.get(1)
    assert job.status is JobStatus.CANCELLED and job.images == ()
    assert rig.service.queue_text(ALICE) == "the queue is empty"


# ---- /imagine without running ------------------------------------------------------------------
async def test_defaults_fill_in_what_the_command_leaves_out(rig):
    reply = await rig.ok(ALICE, "/imagine a cat")
    params = reply.job.params
    assert params == Txt2ImgParams(
        prompt="a cat", negative_prompt="blurry", seed=params.seed, steps=3, cfg=5.5,
        width=128, height=128, count=1, scheduler="euler", model="default",
    )  # [generation] model, as the model called "default": recorded by name so a rerun draws with it
    assert (await rig.history.get(reply.job.id)).params == params

    given = (await rig.ok(ALICE, "/imagine a cat --no sharp edges --ar 2:1 cfg=8 scheduler=ddim")).job.params
    assert (given.negative_prompt, given.cfg, given.scheduler) == ("sharp edges", 8.0, "ddim")
    assert (given.width, given.height) == (192, 64)  # the aspect ratio at the configured pixel count
    assert given.steps == 3


async def test_a_random_seed_when_none_is_given(rig):
    seeds = [(await rig.ok(ALICE, "/imagine a cat")).job.params.seed for _ in range(4)]
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert len(set(seeds)) == 4
    assert (await rig.ok(ALICE, "/imagine a cat --seed 0")).job.params.seed == 0


async def test_replies_give_the_job_number_and_fair_position(rig):
    assert (await rig.ok(ALICE, "/imagine one")).text == "queued #1 (position 1)"
    assert (await rig.ok(ALICE, "/imagine two")).text == "queued #2 (position 2)"
    # Bob's first job goes before Alice's second: one per person per turn.
    assert (await rig.ok(BOB, "/imagine three")).text == "queued #3 (position 2)"


async def test_queue_text(rig):
    assert (await rig.say(ALICE, "/queue")) == Reply("the queue is empty")
    await rig.ok(ALICE, "/imagine a cat")
    await rig.ok(ALICE, "/imagine a bird " + "with very long feathers " * 5)
    await rig.ok(BOB, "/imagine a dog")
    await rig.ok(Owner("discord", "444"), "/imagine a fox")  # no display name: the id is shown
    admin_alone = Owner("discord", "999", chat_id="dm", admin=True, private=True)  # sees every prompt
    text = (await rig.say(admin_alone, "/queue")).text
    assert text.splitlines() == [
        "1. #1 (alice) a cat",
        "2. #3 (bob) a dog",
        "3. #4 (444) a fox",
        "4. #2 (alice) " + ("a bird " + "with very long feathers " * 5)[:50],
    ]
    assert (await rig.say(BOB, "/queue")).text.splitlines() == [
        "1. someone's txt2img job", "2. #3 (bob) a dog", "3. someone's txt2img job", "4. someone's txt2img job"]


async def test_help(rig):
    reply = await rig.say(ALICE, "/help")
    assert reply == Reply(help_text(rig.service.config.limits))
    assert "limits: steps 1–500" in reply.text


# ---- attachments ---------------------------------------------------------------------------------
async def test_an_attachment_sets_the_size_unless_the_command_does(rig):
    upload = Attachment("photo.png", png(96, 128))
    first = (await rig.ok(ALICE, "/imagine a portrait", upload)).job.params
    assert (first.width, first.height) == (128, 128)  # 3:4 at 128x128 pixels, rounded to 64s
    tall = (await rig.ok(ALICE, "/imagine a portrait", Attachment("tall.png", png(64, 400)))).job.params
    assert (tall.width, tall.height) == (64, 256)  # 1:6.25 is drawn at the tallest ratio we allow, 1:4
    given = (await rig.ok(ALICE, "/imagine a portrait --size 64x96 --strength 0.4", upload)).job.params
    assert (given.width, given.height, given.strength) == (64, 96, 0.4)
    assert given.input_sha256 == first.input_sha256  # the same upload is stored once
    assert len(list((rig.service.config.storage.data_dir / "inputs").iterdir())) == 2


async def test_a_text_file_is_not_an_image(rig):
    text = await rig.refused(ALICE, "/imagine a cat", Attachment("notes.txt", b"remember to buy milk\n"))
    assert text == "the attached file is not an image; accepted formats are PNG, JPEG, WebP, GIF and BMP"
    assert await rig.history.recent(ALICE, 10) == []
    assert not (rig.service.config.storage.data_dir / "inputs").exists()


async def test_an_upload_over_the_size_limit_is_refused(make_rig):
    rig = await make_rig(limits=LimitsConfig(max_upload_bytes=200_000))
    upload = png(300, 300)
    assert len(upload) > 200_000
    text = await rig.refused(ALICE, "/imagine a cat", Attachment("big.png", upload))
    assert text == f"the image is {len(upload) / 1e6:.1f} MB; the limit is 0.2 MB"
    assert not (rig.service.config.storage.data_dir / "inputs").exists()
    # The same person's next, smaller upload works.
    await rig.ok(ALICE, "/imagine a cat", Attachment("small.png", png(64, 64)))


async def test_attachment_misuse(rig):
    image = Attachment("a.png", png(64, 64))
    assert await rig.refused(ALICE, "/imagine a cat --strength 0.5") == (
        "--strength is for image→image; attach an image to use it"
    )
    assert await rig.refused(ALICE, "/imagine a cat", image, image) == "attach one image at most"
    assert await rig.refused(ALICE, "/history", image) == "/history does not take an image (only /imagine, /sketch, /animate and /train do)"
    assert await rig.refused(ALICE, "/face --seed 3", image) == "/face does not take an image (only /imagine, /sketch, /animate and /train do)"
    assert await rig.refused(ALICE, "/imagine a cat --strength 1.5", image) == (
        "strength must be above 0 and at most 1, got 1.5"
    )
    assert not (rig.service.config.storage.data_dir / "inputs").exists()


async def test_a_decompression_bomb_is_refused_and_the_bot_keeps_serving(make_rig):
    rig = await make_rig()
    bomb = blank_png(14000, 14000)  # 190 KB of PNG, 196 million pixels once decoded
    assert len(bomb) < rig.service.config.limits.max_upload_bytes
    assert await rig.refused(ALICE, "/imagine a cat", Attachment("bomb.png", bomb)) == (
        f"the image is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit is 64,000,000 pixels"
    )
    tight = await make_rig(limits=LimitsConfig(max_upload_pixels=100_000))
    assert await tight.refused(ALICE, "/imagine a cat", Attachment("wide.png", blank_png(400, 300))) == (
        "the image is 400x300 pixels; the limit is 100,000 pixels"
    )
    assert inputs(rig) == [] and inputs(tight) == []
    await tight.ok(ALICE, "/imagine a cat", Attachment("fits.png", blank_png(400, 250)))


async def test_a_big_upload_is_decoded_off_the_event_loop_and_stored_no_bigger_than_max_side(rig, monkeypatch):
    upload = photo(8000, 6000)  # a 48 MP phone photo; decoding it takes a good part of a second
    decoded_on: list[threading.Thread] = []

    def watched_open_upload(*args, **kwargs):  # the real decoder, noting which thread runs it
        decoded_on.append(threading.current_thread())
        return open_upload(*args, **kwargs)

    monkeypatch.setattr(service_module, "open_upload", watched_open_upload)
    reply = await rig.ok(ALICE, "/imagine a harbour", Attachment("IMG_0001.jpg", upload))
    # Other people's commands and the running job's progress wait on the loop: decoding must not hold it.
    assert len(decoded_on) == 1 and decoded_on[0] is not threading.main_thread()
    stored = rig.service.images.input_path(reply.job.params.input_sha256)
    with Image.open(stored) as image:
        assert image.size == (2048, 1536)  # [limits] max_side, same 4:3 shape
    assert (reply.job.params.width, reply.job.params.height) == (128, 128)  # 4:3 at 128x128 pixels, in 64s


async def test_an_upload_is_stored_within_a_smaller_max_side(make_rig):
    rig = await make_rig(limits=LimitsConfig(max_side=256))
    params = (await rig.ok(ALICE, "/imagine a bridge", Attachment("wide.png", png(600, 200)))).job.params
    with Image.open(rig.service.images.input_path(params.input_sha256)) as image:
        assert image.size == (256, 85)
    assert (params.width, params.height) == (192, 64)  # the aspect ratio comes through the shrinking


async def test_a_refused_img2img_job_leaves_no_input_behind(make_rig):
    rig = await make_rig(queue=QueueConfig(max_per_user=1, max_total=50))
    await rig.ok(ALICE, "/imagine one")
    full = "you already have 1 job(s) waiting or running (limit 1); wait for one to finish or /cancel one"
    assert await rig.refused(ALICE, "/imagine two", Attachment("a.png", png(64, 64, seed=1))) == full
    assert inputs(rig) == []
    # The same picture, already kept for Bob's job, stays when Alice's copy of it is refused.
    bobs = (await rig.ok(BOB, "/imagine bob's", Attachment("b.png", png(64, 64, seed=2)))).job
    assert await rig.refused(ALICE, "/imagine mine too", Attachment("b.png", png(64, 64, seed=2))) == full
    assert inputs(rig) == [f"{bobs.params.input_sha256}.png"]
    # A job refused by the limits is checked before anything is saved.
    assert await rig.refused(CAROL, "/imagine c --steps 1 --strength 0.5", Attachment("c.png", png(64, 64, seed=3))) == (
        "image→image runs int(steps × strength) steps: 1 × 0.5 gives 0; use at least 2 steps or a higher strength"
    )
    assert inputs(rig) == [f"{bobs.params.input_sha256}.png"]


async def test_an_unexpected_error_is_logged_once_and_the_bot_keeps_serving(rig, caplog):
    # A real fault, not a user's mistake: the inputs folder cannot be created (a file is in the way).
    data_dir = rig.service.config.storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "inputs").write_text("not a folder", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        reply = await rig.say(ALICE, "/imagine a cat", Attachment("cat.png", png(64, 64)))
    assert reply == Reply("something went wrong with that command; the details are in the log", error=True)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "bot.service" and record.exc_info is not None
    assert isinstance(record.exc_info[1], FileExistsError)
    assert "discord:111" in record.getMessage() and "/imagine a cat" in record.getMessage()
    assert await rig.all_jobs() == []
    # The next command, from anyone, works.
    assert (await rig.ok(BOB, "/imagine a dog")).text == "queued #1 (position 1)"


# ---- limits and errors ---------------------------------------------------------------------------
async def test_limit_errors_are_replies_and_the_next_command_works(rig):
    assert await rig.refused(ALICE, "/imagine a cat --steps 100000") == "steps must be 1–500, got 100000"
    assert await rig.refused(ALICE, "/imagine a cat --size 99999x3") == (
        "width must be a multiple of 8 from 64 to 2048, got 99999"
    )
    assert await rig.refused(ALICE, "/imagine a cat --size 2048x2048") == (
        "2048x2048 is 4,194,304 pixels; the limit is 2,359,296 (e.g. 1536 square)"
    )
    assert await rig.refused(ALICE, f"/imagine a cat --seed {MAX_SEED} --n 2") == (
        f"seed must be 0–{MAX_SEED - 1}, got {MAX_SEED}"
    )
    assert await rig.refused(ALICE, "/imagine " + "x" * 1001) == "the prompt is 1001 characters; the limit is 1000"
    assert await rig.refused(ALICE, "/imagine a cat --sed 4") == (
        "unknown option --sed; did you mean --seed?"
    )
    assert await rig.refused(ALICE, "imagine a cat") == "commands start with /, e.g. /imagine a cat (/help lists them)"
    assert (await rig.ok(ALICE, "/imagine a cat")).text == "queued #1 (position 1)"


async def test_limits_come_from_the_config(make_rig):
    rig = await make_rig(limits=LimitsConfig(max_steps=50, max_count=2))
    assert await rig.refused(ALICE, "/imagine a cat --steps 51") == "steps must be 1–50, got 51"
    assert await rig.refused(ALICE, "/imagine a cat --n 3") == "n must be 1–2, got 3"
    assert (await rig.ok(ALICE, "/imagine a cat --steps 50 --n 2")).job.params.count == 2


async def test_queue_limits_refuse_without_persisting(make_rig):
    rig = await make_rig(queue=QueueConfig(max_per_user=2, max_total=3))
    await rig.ok(ALICE, "/imagine one")
    await rig.ok(ALICE, "/imagine two")
    assert await rig.refused(ALICE, "/imagine three") == (
        "you already have 2 job(s) waiting or running (limit 2); wait for one to finish or /cancel one"
    )
    assert await rig.refused(ALICE, "/rerun") == (
        "you already have 2 job(s) waiting or running (limit 2); wait for one to finish or /cancel one"
    )
    await rig.ok(BOB, "/imagine four")
    assert await rig.refused(CAROL, "/imagine five") == "the queue is full (3 jobs waiting); try again in a few minutes"
    assert await rig.all_jobs() == [1, 2, 3]
    await rig.say(ALICE, "/cancel #1")
    assert (await rig.ok(ALICE, "/imagine three")).text == "queued #4 (position 3)"


# ---- /rerun ---------------------------------------------------------------------------------------
async def test_rerun_seed_picks_your_latest_job_with_it_and_keeps_every_other_setting(rig):
    await rig.ok(ALICE, "/imagine first --seed 42")
    second = (await rig.ok(
        ALICE, "/imagine second --seed 42 --cfg 9 --no ugly hands --size 64x128 --scheduler ddim --steps 12"
    )).job
    await rig.ok(BOB, "/imagine bob's --seed 42")
    await rig.ok(ALICE, "/imagine other --seed 7")

    reply = await rig.ok(ALICE, "/rerun 42 steps=20")
    assert reply.text == f"queued #{reply.job.id} (position 5), rerun of #{second.id}"
    assert reply.job.parent_id == second.id and reply.job.owner == ALICE
    assert reply.job.params == second.params.replace(steps=20)
    assert (await rig.history.get(reply.job.id)).params == second.params.replace(steps=20)

    # Now the rerun itself is the latest with seed 42, and it carries the 20 steps on.
    overridden = (await rig.ok(ALICE, "/rerun 42 --no nothing at all --cfg 3 --ar 1:1 n=2")).job.params
    assert overridden == second.params.replace(
        steps=20, negative_prompt="nothing at all", cfg=3.0, width=128, height=128, count=2
    )

    bobs = (await rig.ok(BOB, "/rerun 42")).job
    assert bobs.params.prompt == "bob's" and bobs.parent_id == 3


async def test_rerun_of_a_seed_inside_a_batch_redraws_that_one_image(rig):
    batch = (await rig.ok(ALICE, "/imagine trio --seed 100 --n 3 --steps 5")).job
    one = (await rig.ok(ALICE, "/rerun 101")).job
    assert one.params == batch.params.replace(seed=101, count=1)
    assert one.parent_id == batch.id
    # Overrides apply on top of the one image's settings.
    assert (await rig.ok(ALICE, "/rerun 102 steps=9")).job.params == batch.params.replace(seed=102, count=1, steps=9)
    # The batch's first seed redraws the whole batch.
    whole = (await rig.ok(ALICE, "/rerun 100")).job
    assert whole.params == batch.params and whole.parent_id == batch.id


async def test_rerun_of_another_persons_job_by_number(rig):
    bobs = (await rig.ok(BOB, "/imagine bob's castle --seed 9 --steps 4")).job
    reply = await rig.ok(ALICE, "/rerun #1 cfg=3")
    assert reply.text == "queued #2 (position 2), rerun of #1"
    assert reply.job.owner == ALICE and reply.job.parent_id == bobs.id
    assert reply.job.params == bobs.params.replace(cfg=3.0)


async def test_another_persons_img2img_job_cannot_be_rerun_by_number(rig):
    # Its input is their photo: a rerun at low strength would hand the photo to whoever asked.
    bobs = (await rig.ok(BOB, "/imagine me at the beach --seed 9", Attachment("me.png", png(64, 64)))).job
    refusal = "job #1 is someone else's image→image job; its input image is theirs to rerun"
    assert await rig.refused(ALICE, "/rerun #1") == refusal  # the same chat: she saw it, but the photo is Bob's
    assert await rig.refused(ALICE, "/rerun #1 strength=0.1 steps=40") == refusal
    # Elsewhere the job is not even named: another platform, the same id on another platform, the console.
    assert await rig.refused(CAROL, "/rerun #1") == "there is no job #1"
    assert await rig.refused(Owner("telegram", BOB.user_id), "/rerun #1") == "there is no job #1"
    assert await rig.refused(CONSOLE, "/rerun #1") == "there is no job #1"
    again = (await rig.ok(BOB, "/rerun #1 strength=0.4")).job
    assert again.params == bobs.params.replace(strength=0.4) and again.parent_id == 1
    # Text→image jobs stay anyone's to rerun.
    await rig.ok(BOB, "/imagine a castle --seed 4")
    assert (await rig.ok(ALICE, "/rerun #3")).job.parent_id == 3


async def test_rerun_of_a_job_you_do_not_have(rig):
    assert await rig.refused(ALICE, "/rerun") == "you have no jobs to rerun yet; start with /imagine"
    assert await rig.refused(ALICE, "/rerun 5") == "you have no job with seed 5; /history shows your seeds"
    assert await rig.refused(ALICE, "/rerun #9") == "there is no job #9"
    await rig.ok(BOB, "/imagine bob's --seed 42 --n 2")
    # Bob's seeds are Bob's: /rerun SEED looks only at your own jobs.
    assert await rig.refused(ALICE, "/rerun 43") == "you have no job with seed 43; /history shows your seeds"
    assert await rig.refused(ALICE, "/rerun 44") == "you have no job with seed 44; /history shows your seeds"


async def test_rerun_checks_its_settings(rig):
    await rig.ok(ALICE, "/imagine a cat --seed 3")
    assert await rig.refused(ALICE, "/rerun 3 steps=9999") == "steps must be 1–500, got 9999"
    assert await rig.refused(ALICE, "/rerun 3 cute=yes") == (
        "unknown setting 'cute'; settings are "
        "no, seed, steps, cfg, ar, size, n, scheduler, model, strength, hires, hires-strength, refiner, mode, pix2pix, control, psi, layers, scale, denoise, variation, factor, direction, "
        "frames, fps, from, to, zoom, rotate, shift, reverse, fixed-seed, colour, name, epochs, decay-epochs, iterations, edges, ngf"
    )
    assert await rig.refused(ALICE, "/rerun #1 strength=0.5") == "strength is for image→image; job #1 had no input image"


async def test_rerun_of_an_ancestral_sampler_at_other_steps_warns(rig):
    await rig.ok(ALICE, "/imagine a cat --seed 3 --scheduler euler_a")
    warned = await rig.ok(ALICE, "/rerun 3 steps=40")
    assert warned.text == (
        "queued #2 (position 2), rerun of #1 (euler_a is ancestral: at another step count the picture changes)"
    )
    assert (await rig.ok(ALICE, "/rerun #1 cfg=2")).text == "queued #3 (position 3), rerun of #1"
    await rig.ok(ALICE, "/imagine a dog --seed 4")
    assert (await rig.ok(ALICE, "/rerun 4 steps=40")).text == "queued #5 (position 5), rerun of #4"


async def test_rerun_of_an_img2img_job(rig):
    params = (await rig.ok(ALICE, "/imagine a barn --seed 8", Attachment("barn.png", png(64, 64)))).job.params
    again = (await rig.ok(ALICE, "/rerun 8 strength=0.9")).job.params
    assert again == params.replace(strength=0.9)
    rig.service.images.input_path(params.input_sha256).unlink()
    assert await rig.refused(ALICE, "/rerun 8") == "the input image of job #2 is no longer on disk"


# ---- /cancel ---------------------------------------------------------------------------------------
async def test_cancel_waiting_jobs(rig):
    await rig.ok(ALICE, "/imagine one")
    await rig.ok(ALICE, "/imagine two")
    await rig.ok(BOB, "/imagine three")
    assert await rig.refused(BOB, "/cancel #1") == "job #1 is not yours; only its owner or an admin can cancel it"
    assert await rig.say(ALICE, "/cancel") == Reply("cancelled #2")  # the one of yours that would run last
    assert (await rig.history.get(2)).status is JobStatus.CANCELLED
    assert await rig.refused(ALICE, "/cancel #2") == "job #2 has already finished (cancelled)"
    assert await rig.refused(ALICE, "/cancel #99") == "there is no job #99"
    assert await rig.say(ALICE, "/cancel #1") == Reply("cancelled #1")
    assert await rig.refused(ALICE, "/cancel") == "you have no waiting or running jobs to cancel"
    assert rig.service.queue_text(BOB) == "1. #3 (bob) three"
    assert rig.service.queue_text(ALICE) == "1. someone's txt2img job"
    assert [event.job.id for event in rig.events if event.kind is EventKind.CANCELLED] == [2, 1]


async def test_admins_may_cancel_anyones_job(make_rig):
    rig = await make_rig(access=AccessConfig(admins=("telegram:333",)))
    for n in range(3):
        await rig.ok(ALICE, f"/imagine job {n}")
    assert await rig.say(CAROL, "/cancel #1") == Reply("cancelled #1")  # an admin by config
    assert await rig.say(CONSOLE, "/cancel #2") == Reply("cancelled #2")  # whoever sits at the terminal
    # The same user id on another platform is someone else.
    impostor = Owner("discord", "333")
    assert await rig.refused(impostor, "/cancel #3") == "job #3 is not yours; only its owner or an admin can cancel it"
    assert rig.service.is_admin(CAROL) and rig.service.is_admin(CONSOLE)
    assert not rig.service.is_admin(impostor) and not rig.service.is_admin(ALICE)


# ---- /history and the frontends' view ------------------------------------------------------------
async def test_history_text(rig):
    assert await rig.say(ALICE, "/history") == Reply("no jobs in this chat yet; start with /imagine a red lighthouse at dusk")
    long_prompt = "a very detailed painting of " + "many small boats " * 6
    await rig.ok(ALICE, f"/imagine {long_prompt} --seed 11")
    await rig.ok(ALICE, "/imagine a cat --seed 12 --size 64x64")
    await rig.ok(BOB, "/imagine bob's --seed 13")
    await rig.say(ALICE, "/cancel #2")
    await rig.ok(ALICE, "/rerun 11 steps=7")
    lines = (await rig.say(ALICE, "/history")).text.splitlines()
    assert lines == [
        f"#4 queued: {long_prompt.strip()[:59]}… — seed 11 · 7 steps · cfg 5.5 · 128x128 · rerun of #1",
        "#2 cancelled: a cat — seed 12 · 3 steps · cfg 5.5 · 64x64",
        f"#1 queued: {long_prompt.strip()[:59]}… — seed 11 · 3 steps · cfg 5.5 · 128x128",
    ]
    assert (await rig.say(ALICE, "/history 1")).text.splitlines() == lines[:1]
    assert "bob's" in (await rig.say(BOB, "/history")).text


async def test_subscribe_and_pending_are_per_platform(rig):
    seen: list[JobEvent] = []
    unsubscribe = await rig.service.subscribe("telegram", seen.append)
    await rig.ok(ALICE, "/imagine on discord")
    await rig.ok(CAROL, "/imagine on telegram")
    assert [(event.kind, event.job.id) for event in seen] == [(EventKind.QUEUED, 2)]
    assert [job.id for job in rig.service.pending("telegram")] == [2]
    assert [job.id for job in rig.service.pending("discord")] == [1]
    unsubscribe()
    await rig.ok(CAROL, "/imagine again")
    assert len(seen) == 1


async def test_rerun_by_number_works_only_where_the_job_could_be_seen(rig):
    bobs = (await rig.ok(BOB, f"/imagine a castle --seed 4 {FAST}")).job  # in chat c1
    in_another_chat = Owner("discord", ALICE.user_id, chat_id="c2", name="alice")
    assert await rig.refused(in_another_chat, f"/rerun #{bobs.id}") == f"there is no job #{bobs.id}"
    assert (await rig.ok(ALICE, f"/rerun #{bobs.id}")).job.parent_id == bobs.id  # the chat it was asked in
    bob_elsewhere = Owner("discord", BOB.user_id, chat_id="dm", name="bob")
    assert (await rig.ok(bob_elsewhere, f"/rerun #{bobs.id}")).job.parent_id == bobs.id  # his own, anywhere


async def test_a_typed_command_is_never_read_as_text_again(rig):
    # A slash command's prompt option is the prompt, whatever it contains.
    command = Imagine("a sign that says x=5 --seed 3", Settings(seed=11, steps=2, width=64, height=64))
    reply = await rig.service.execute(ALICE, command)
    assert not reply.error, reply.text
    assert (reply.job.params.prompt, reply.job.params.seed) == ("a sign that says x=5 --seed 3", 11)
    # Errors map to replies the same way as for text.
    bad = await rig.service.execute(ALICE, Imagine("a cat", Settings(steps=100000)))
    assert bad.error and bad.text == "steps must be 1–500, got 100000"
    assert (await rig.service.execute(ALICE, ShowQueue())).text.startswith("1. #1")


async def test_a_kind_with_no_engine_is_refused_before_anything_is_kept(make_rig, tmp_path: Path):
    rig = await make_rig()
    del rig.queue.runner.engines["img2img"]  # as on an easel set up without that engine
    text = await rig.refused(ALICE, "/imagine me at the beach", Attachment("me.png", png(64, 64)))
    assert text == "img2img jobs are not set up on this easel"
    assert not list(rig.service.images.inputs.glob("*.png"))  # the upload was not kept for nothing
    await rig.ok(ALICE, f"/imagine still drawing text {FAST}")


async def test_a_result_that_finished_before_anyone_subscribed_is_replayed_once(rig):
    # A job that was running when easel died: recovered on start, finished before a frontend connects.
    job = await rig.history.add_job(CAROL, Txt2ImgParams(prompt="recovered", seed=5, steps=2, cfg=7, width=64,
                                                         height=64, scheduler="euler"))
    await rig.history.mark_running(job.id)
    await rig.queue.start()
    assert (await rig.finished(job.id)).kind is EventKind.DONE  # nobody from telegram listened
    seen: list[JobEvent] = []
    unsubscribe = await rig.service.subscribe("telegram", seen.append)
    assert [(e.kind, e.job.id, e.replayed) for e in seen] == [(EventKind.DONE, job.id, True)]
    assert seen[0].job.images and Path(seen[0].job.images[0].path).exists()
    unsubscribe()
    await rig.service.delivered(seen[0].job)
    again: list[JobEvent] = []
    (await rig.service.subscribe("telegram", again.append))()
    assert again == []  # delivered: not replayed on the next connection


async def test_a_job_that_ends_while_the_replay_is_read_is_sent_once(rig):
    await rig.queue.start()
    reply = await rig.ok(CAROL, f"/imagine racing {FAST}")
    seen: list[JobEvent] = []
    unsubscribe = await rig.service.subscribe("telegram", seen.append)
    await rig.finished(reply.job.id)
    later: list[JobEvent] = []
    unsubscribe_later = await rig.service.subscribe("telegram", later.append)  # not yet marked delivered
    ends = [e for e in seen if e.finished]
    assert [(e.kind, e.job.id) for e in ends] == [(EventKind.DONE, reply.job.id)]
    assert [(e.kind, e.job.id, e.replayed) for e in later] == [(EventKind.DONE, reply.job.id, True)]
    unsubscribe()
    unsubscribe_later()


def test_the_settings_line_shows_numbers_as_typed():
    from tests.conftest import params

    assert describe(params(cfg=7.1234567, seed=3)) == "seed 3 · 2 steps · cfg 7.1234567 · 64x64"
    assert describe(params(cfg=7.0, strength=0.35), seed=4) == "seed 4 · 2 steps · cfg 7 · 64x64 · strength 0.35"


async def test_the_console_user_owns_the_machine_and_is_held_only_to_the_total(make_rig):
    rig = await make_rig(queue=QueueConfig(max_per_user=2, max_total=9))
    for n in range(9):  # nine piped jobs all queue: more than the per-person limit of 2
        await rig.ok(CONSOLE, f"/imagine job {n}")
    assert await rig.refused(CONSOLE, "/imagine one too many") == (
        "the queue is full (9 jobs waiting); try again in a few minutes"
    )


async def test_control_characters_never_reach_the_job_or_its_png(rig):
    await rig.queue.start()
    hostile = "a red\x1b]0;pwned\x07 lighthouse\x00\x1b[2J\x9b1m\tat dusk"
    reply = await rig.ok(ALICE, f"/imagine {hostile} --seed 3 {FAST}")
    assert reply.job.params.prompt == "a red]0;pwned lighthouse[2J1m at dusk"
    done = await rig.finished(reply.job.id)
    text = read_parameters(Path(done.job.images[0].path))
    assert text.startswith("a red]0;pwned lighthouse[2J1m at dusk\n")
    assert not any(ord(c) < 32 and c != "\n" or 127 <= ord(c) < 160 for c in text)
    typed = await rig.service.execute(ALICE, Imagine("x\x1by", Settings(negative_prompt="n\x07o")))
    assert (typed.job.params.prompt, typed.job.params.negative_prompt) == ("xy", "no")


# ---- /sketch --------------------------------------------------------------------------------------
def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


async def test_a_coloured_drawing_goes_to_image_to_image_and_says_so(make_rig, tiny_controlnet: Path):
    from generation.config import SketchConfig
    from tests.generation.sketches import crayon_drawing, degraded_sketches

    rig = await make_rig(sketch=SketchConfig(controlnet=str(tiny_controlnet)))
    coloured = await rig.ok(ALICE, "/sketch a sunny meadow", Attachment("crayons.jpg", jpeg(crayon_drawing())))
    assert coloured.job.params.kind == "img2img"
    assert coloured.text.endswith("a coloured drawing: drawn by image→image (--mode scribble to follow its lines)")
    forced = await rig.ok(ALICE, "/sketch a sunny meadow --mode scribble", Attachment("c.jpg", jpeg(crayon_drawing())))
    assert forced.job.params.kind == "sketch" and forced.text.endswith("· scribble")
    _, _, pencil = degraded_sketches(0)[0]
    lines = await rig.ok(ALICE, "/sketch a portrait --control 0.6", Attachment("pencil.jpg", jpeg(pencil)))
    params = lines.job.params
    assert params.kind == "sketch" and params.control_scale == 0.6 and params.width % 64 == 0
    assert rig.service.images.input_path(params.control_sha256).exists()
    assert rig.service.images.input_path(params.input_sha256).exists()


async def test_sketch_refusals_say_what_to_do(make_rig, tiny_controlnet: Path):
    from generation.config import SketchConfig

    rig = await make_rig(sketch=SketchConfig(controlnet=str(tiny_controlnet)))
    drawing = Attachment("d.png", png(64, 64))
    assert await rig.refused(ALICE, "/sketch a house") == (
        "attach the drawing: a photo of it or the file (console: /sketch a house --image house.jpg)")
    assert await rig.refused(ALICE, "/sketch a house --mode pix2pix", drawing) == (
        "--mode pix2pix needs a pix2pix generator: set [sketch] pix2pix to its .pth file, or --pix2pix NAME of a "
        "model trained here")
    assert await rig.refused(ALICE, "/sketch a house --ar 16:9", drawing) == (
        "/sketch takes its size from the drawing; leave out --ar and --size")
    assert await rig.refused(ALICE, "/sketch a house --control 3 --mode scribble", drawing) == "control must be 0–2, got 3"
    assert await rig.refused(ALICE, "/imagine a house --mode scribble") == "--mode, --control and --pix2pix are for /sketch"
    assert await rig.refused(ALICE, "/imagine a house --psi 0.5") == "--psi and --layers are for /face"
    assert await rig.refused(ALICE, "/sketch a house --psi 0.5", drawing) == "--psi and --layers are for /face"
    assert (await rig.refused(ALICE, "/sketch a house --mode crayon", drawing)).startswith("unknown mode 'crayon'")


async def test_pix2pix_mode_draws_with_the_configured_generator(make_rig, tiny_controlnet: Path, tmp_path: Path):
    import torch

    from generation.config import SketchConfig
    from generation.pix2pix import UnetGenerator

    generator = tmp_path / "latest_net_G.pth"
    torch.manual_seed(0)
    torch.save(UnetGenerator(ngf=4).state_dict(), generator)
    rig = await make_rig(sketch=SketchConfig(controlnet=str(tiny_controlnet), pix2pix=str(generator)))
    await rig.queue.start()
    reply = await rig.ok(ALICE, "/sketch a shoe --mode pix2pix --seed 3", Attachment("shoe.png", png(200, 120)))
    done = await rig.finished(reply.job.id)
    assert done.kind is EventKind.DONE, done.error
    with Image.open(done.job.images[0].path) as image:
        assert image.size == (256, 256)
    assert done.job.run.controlnet == "pix2pix:latest_net_G.pth"
    again = await rig.ok(ALICE, "/rerun 3")
    assert (await rig.finished(again.job.id)).kind is EventKind.DONE
    assert np.array_equal(pixels(done.job.images[0].path), pixels((await rig.history.get(again.job.id)).images[0].path))


# ---- /face ----------------------------------------------------------------------------------------
async def test_face_without_a_checkpoint_is_a_portrait_by_stable_diffusion_and_says_so(rig):
    reply = await rig.ok(ALICE, "/face --seed 12")
    assert reply.text.endswith("· no [faces] checkpoint: a portrait by Stable Diffusion")
    assert reply.job.params.kind == "txt2img" and reply.job.params.seed == 12
    assert await rig.refused(ALICE, "/face mix 1 2") == (
        "mixing and editing faces need a StyleGAN2 checkpoint: set [faces] checkpoint")


async def test_face_without_a_checkpoint_refuses_psi_and_its_rerun_says_it_was_a_face(rig):
    # A Stable Diffusion portrait has no ψ: --psi would be ignored, so it is refused.
    assert await rig.refused(ALICE, "/face --psi 0.5 --n 2 --seed 9") == (
        "--psi needs a StyleGAN2 checkpoint: set [faces] checkpoint; "
        "without one /face draws a Stable Diffusion portrait")
    face = await rig.ok(ALICE, "/face --n 2 --seed 9")
    it_was_a_face = (f"job #{face.job.id} is a /face portrait by Stable Diffusion (no [faces] checkpoint was set); "
                     "psi and layers are for StyleGAN2 faces")
    assert await rig.refused(ALICE, f"/rerun #{face.job.id} psi=0.5") == it_was_a_face
    assert await rig.refused(ALICE, "/rerun 10 layers=fine") == it_was_a_face  # by a seed inside the batch
    assert (await rig.ok(ALICE, f"/rerun #{face.job.id} steps=4")).job.params.prompt == face.job.params.prompt
    drawn = await rig.ok(ALICE, "/imagine a cat")
    assert await rig.refused(ALICE, f"/rerun #{drawn.job.id} psi=0.5") == "psi and layers are for /face"


async def test_faces_queue_record_and_rerun(make_rig, tmp_path: Path):
    from generation.config import FacesConfig
    from tests.generation.nvidia_pickle import write_nvidia_pickle
    from tests.generation.nvidia_pickle import TINY, tiny_generator

    path = write_nvidia_pickle(tmp_path / "tiny.pkl", tiny_generator(), TINY)
    rig = await make_rig(faces=FacesConfig(checkpoint=str(path)))
    await rig.queue.start()
    first = await rig.ok(ALICE, "/face --seed 40 --psi 0.5")
    done = await rig.finished(first.job.id)
    assert done.kind is EventKind.DONE, done.error
    text = read_parameters(Path(done.job.images[0].path))
    assert "Seed: 40, Truncation psi: 0.5" in text and "Model: tiny.pkl" in text
    again = await rig.ok(ALICE, "/rerun 40")
    assert (await rig.finished(again.job.id)).kind is EventKind.DONE
    assert np.array_equal(pixels(done.job.images[0].path), pixels((await rig.history.get(again.job.id)).images[0].path))
    mixed = await rig.ok(ALICE, "/face mix 40 41 --layers fine")
    assert (mixed.job.params.mix_seed, mixed.job.params.layers) == (41, "fine")
    edited = await rig.ok(ALICE, "/face edit 40 dir1=1.5")
    assert edited.job.params.edits == (("dir1", 1.5),)
    assert (await rig.finished(edited.job.id)).kind is EventKind.DONE
    assert await rig.refused(ALICE, "/face edit 40 smile=1") == (
        "no direction 'smile'; use dir0 … dir9 (found in the weights) or one of: none configured")
    assert await rig.refused(ALICE, "/face --steps 30") == "/face takes --seed, --psi and --n (and --layers with mix); steps is for /imagine"
    assert await rig.refused(ALICE, "/rerun 40 steps=9") == f"job #{edited.job.id} is a face; /rerun takes seed, n, psi (and layers for a mix)"


# ---- privacy between chats ---------------------------------------------------------------------
async def test_queue_shows_other_peoples_jobs_as_someones_with_place_and_kind_only(make_rig):
    rig = await make_rig(access=AccessConfig(admins=("telegram:333",)))
    await rig.ok(ALICE, "/imagine alice's secret lighthouse --seed 1")
    await rig.ok(CAROL, "/imagine carol's garden --seed 2")
    await rig.ok(BOB, "/rerun #1 steps=4")  # bob may rerun it: asked for in his chat
    alice_sees = (await rig.say(ALICE, "/queue")).text
    assert alice_sees.splitlines() == ["1. #1 (alice) alice's secret lighthouse", "2. someone's txt2img job",
                                       "3. someone's txt2img job"]
    carol_in_a_group = Owner("telegram", "333", chat_id="-100", name="carol")  # an admin, but the group reads it
    assert "bob" not in (await rig.say(carol_in_a_group, "/queue")).text
    carol_alone = Owner("telegram", "333", chat_id="333", name="carol", private=True)
    assert (await rig.say(carol_alone, "/queue")).text.splitlines()[2] == "3. #3 (bob) alice's secret lighthouse"
    bob_alone = Owner("discord", "222", chat_id="dm", name="bob", private=True)  # private, but no admin
    assert (await rig.say(bob_alone, "/queue")).text.splitlines()[:2] == ["1. someone's txt2img job",
                                                                          "2. someone's txt2img job"]


async def test_history_in_a_group_lists_that_groups_jobs_and_in_private_everything(rig):
    group = Owner("telegram", "444", chat_id="-100", name="dave")
    alone = Owner("telegram", "444", chat_id="444", name="dave", private=True)
    await rig.ok(alone, "/imagine my private diary --seed 1")
    await rig.ok(group, "/imagine a group picture --seed 2")
    in_group = (await rig.say(group, "/history")).text
    assert "group picture" in in_group and "diary" not in in_group
    everything = (await rig.say(alone, "/history")).text
    assert "group picture" in everything and "diary" in everything


async def test_no_chat_message_holds_a_server_path(rig):
    await rig.queue.start()
    reply = await rig.ok(CAROL, f"/imagine a harbour --seed 5 {FAST}")
    done = await rig.finished(reply.job.id)
    path = done.job.images[0].path
    for text in ((await rig.say(CAROL, "/history")).text, (await rig.say(CAROL, f"/history #{reply.job.id}")).text):
        assert Path(path).name in text and str(Path(path).parent) not in text
    assert path in (await rig.say(CONSOLE, "/history")).text or "no jobs" in (await rig.say(CONSOLE, "/history")).text


async def test_bidi_overrides_and_zero_width_characters_are_stripped_from_prompts(rig):
    spoof = "a cat\u202e god a\u202c\u200b\u200d\u2066x\u2069\ufeff\u061c\u200e"
    reply = await rig.ok(ALICE, f"/imagine {spoof} --no dark\u200bness")
    assert reply.job.params.prompt == "a cat god ax" and reply.job.params.negative_prompt == "darkness"


@pytest.mark.parametrize(("text", "shown"), [
    ("model folder '/srv/easel/models/sd15' does not exist", "model folder 'sd15' does not exist"),
    ("cannot write /data/images/: disk full", "cannot write …: disk full"),
    ("at /tmp/x.png.", "at x.png."),
    ("checkpoint C:\\Users\\me\\sd.ckpt is damaged", "checkpoint sd.ckpt is damaged"),
    # Not paths: URLs, ratios, relative and home-relative names stay as they are.
    ("see https://huggingface.co/a/b or http://127.0.0.1:80/x/y", "see https://huggingface.co/a/b or http://127.0.0.1:80/x/y"),
    ("--ar 16/9 and a/b/c and ~/models/x", "--ar 16/9 and a/b/c and ~/models/x"),
])
def test_chat_messages_lose_absolute_server_paths(text, shown):
    from bot.formatting import without_paths

    assert without_paths(text) == shown


async def test_a_failed_jobs_error_reaches_a_chat_without_the_server_path(make_rig, tmp_path: Path):
    from generation.config import GenerationConfig

    rig = await make_rig(generation=GenerationConfig(model=str(tmp_path / "models" / "nowhere"), device="cpu"))
    seen: list[JobEvent] = []
    await rig.service.subscribe("telegram", seen.append)
    await rig.queue.start()
    job = (await rig.ok(CAROL, f"/imagine a boat {FAST}")).job
    await rig.finished(job.id)
    failed = next(event for event in seen if event.kind is EventKind.FAILED)
    assert "nowhere" in failed.job.error and str(tmp_path) not in failed.job.error
    assert str(tmp_path) in (await rig.history.get(job.id)).error  # the record keeps it for the owner's log
