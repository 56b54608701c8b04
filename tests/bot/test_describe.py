"""/describe #N: every recorded setting of a job and the A1111 parameters text its PNG carries; a history read only."""

from __future__ import annotations

import os

from bot.commands import Describe, parse
from bot.commands.face import FACE_PROMPT
from storage.infotext import read_parameters
from tests.bot.rig import ALICE, BOB, CAROL, CONSOLE, DEFAULTS, FAST


async def test_describe_prints_the_recorded_params_and_the_pngs_parameters_text(rig):
    await rig.queue.start()
    reply = await rig.ok(ALICE, f"/imagine a lighthouse, (stormy:1.3) --seed 77 --n 2 --cfg 6.5 {FAST} --no fog")
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    text = (await rig.say(ALICE, f"/describe #{job.id}")).text
    lines = text.splitlines()
    assert lines[0] == f"#{job.id} done: a text→image job"
    for line in ("  kind: txt2img", "  prompt: a lighthouse, (stormy:1.3)", "  negative_prompt: fog", "  seed: 77",
                 "  count: 2", "  steps: 2", "  cfg: 6.5", "  width: 64", "  height: 64", "  scheduler: euler"):
        assert line in lines
    assert any(line.startswith("ran with: ") and "cpu float32" in line for line in lines)
    # Each image's text exactly as its PNG carries it (what A1111's PNG Info tab reads), its own seed included.
    for image in job.images:
        embedded = read_parameters(image.path)
        assert f"Seed: {image.seed}," in embedded
        assert embedded in text
        assert f"A1111 parameters of image {image.index + 1} ({os.path.basename(image.path)}):" in lines
    assert str(rig.service.images.root) not in text  # a chat sees file names, not the server's folders
    # Nothing was queued or drawn for it.
    assert [j for j in await rig.all_jobs()] == [job.id]


async def test_describe_at_the_terminal_names_the_files(rig):
    await rig.queue.start()
    reply = await rig.ok(CONSOLE, f"/imagine a barn --seed 3 {FAST}")
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    text = (await rig.say(CONSOLE, f"/describe {job.id}")).text
    assert f"({job.images[0].path}):" in text


async def test_describe_of_a_job_whose_file_is_gone_rebuilds_its_text_and_says_so(rig):
    await rig.queue.start()
    reply = await rig.ok(ALICE, f"/imagine a lighthouse --seed 5 {FAST}")
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    embedded = read_parameters(job.images[0].path)
    os.unlink(job.images[0].path)
    text = (await rig.say(ALICE, f"/describe #{job.id}")).text
    assert "no longer on disk; as it was written" in text
    assert embedded in text  # the same text, rebuilt from the record


async def test_describe_of_a_waiting_job_has_its_params_and_no_png_yet(make_rig):
    rig = await make_rig()  # its queue is not started: the job stays queued
    reply = await rig.ok(ALICE, f"/imagine a quiet harbour --seed 9 {FAST}")
    text = (await rig.say(ALICE, f"/describe #{reply.job.id}")).text
    assert "  prompt: a quiet harbour" in text and "not drawn yet (queued)" in text


async def test_describe_shows_only_jobs_you_could_see(rig):
    await rig.queue.start()
    reply = await rig.ok(ALICE, f"/imagine a secret garden --seed 1 {FAST}")
    await rig.finished(reply.job.id)
    assert "a secret garden" in (await rig.say(BOB, f"/describe #{reply.job.id}")).text  # same chat
    elsewhere = await rig.say(CAROL, f"/describe #{reply.job.id}")  # another platform and chat
    assert elsewhere.error and elsewhere.text == f"there is no job #{reply.job.id}"
    missing = await rig.say(ALICE, "/describe #999")
    assert missing.error and missing.text == "there is no job #999"


async def test_describe_of_a_face_portrait_and_its_refusals(rig):
    await rig.queue.start()
    reply = await rig.ok(ALICE, "/face --seed 4")  # no [faces] checkpoint: a Stable Diffusion portrait
    await rig.finished(reply.job.id)
    text = (await rig.say(ALICE, f"/describe #{reply.job.id}")).text
    assert f"  prompt: {FACE_PROMPT}" in text and "  seed: 4" in text
    for command, message in (
        ("/describe", "/describe takes a job number, e.g. /describe #12 (/history lists yours)"),
        ("/describe #1 #2", "/describe does not take '#2'"),
        ("/describe #0", "job number must be 1 or more, got 0"),
        ("/describe #x", "job number must be a whole number, got 'x'"),
    ):
        refused = await rig.say(ALICE, command)
        assert refused.error and refused.text == message


def test_describe_parses_with_or_without_the_hash():
    assert parse("/describe #12", DEFAULTS) == Describe(12)
    assert parse("/describe 12", DEFAULTS) == Describe(12)
