"""The actions on a finished picture, through the service on the tiny model: /upscale, /vary, /zoom, /pan and
/imagine --hires. Each is a job whose parent is the source job, recorded, shown in its PNG and rerunnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.config import LimitsConfig, UpscaleConfig
from bot.commands import parse
from bot.replies import Attachment
from storage.infotext import read_parameters
from tests.bot.rig import ALICE, BOB, CAROL, DEFAULTS, FAST, Rig

pytestmark = pytest.mark.usefixtures("tiny_model")
SOURCE = "--size 64x64 --steps 4"  # enough steps for a subtle variation to run one (int(4 × 0.35) = 1)


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


async def drawn(rig: Rig, text: str, owner=ALICE):
    """Queue `text`, wait for it, and return the job as recorded."""
    reply = await rig.ok(owner, text)
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    assert job.status.value == "done", job.error
    return job


@pytest.fixture
async def batch(rig: Rig):
    await rig.queue.start()
    return await drawn(rig, f"/imagine a red lighthouse --n 2 --seed 40 {SOURCE}")


async def test_upscale_enlarges_image_k_with_lanczos_and_records_its_parent(rig: Rig, batch) -> None:
    job = await drawn(rig, f"/upscale #{batch.id} 2 --scale 2")
    assert job.parent_id == batch.id and job.params.source_image == 2 and job.params.upscaler == "Lanczos"
    out = Image.open(job.images[0].path)
    assert out.size == (128, 128)
    source = Image.open(batch.images[1].path).convert("RGB")
    assert np.abs(pixels(job.images[0].path) - np.asarray(source.resize((128, 128), Image.Resampling.LANCZOS))).mean() < 1
    text = read_parameters(job.images[0].path)
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, Size: 128x128" in text
    # The source image is kept as the job's input, like an upload: the rerun needs nothing else.
    assert rig.service.images.input_path(job.params.input_sha256).exists()
    again = await drawn(rig, f"/rerun #{job.id}")
    assert again.parent_id == job.id and np.array_equal(pixels(again.images[0].path), pixels(job.images[0].path))


async def test_upscale_with_denoise_redraws_at_the_new_size_with_the_sources_settings(rig: Rig, batch) -> None:
    job = await drawn(rig, f"/upscale #{batch.id} --scale 1.5 --denoise 0.5")
    assert Image.open(job.images[0].path).size == (96, 96)
    params = job.params
    assert (params.prompt, params.steps, params.scheduler, params.seed) == (
        batch.params.prompt, batch.params.steps, batch.params.scheduler, batch.images[0].seed)
    text = read_parameters(job.images[0].path)
    assert "Denoising strength: 0.5, Postprocess upscale by: 1.5" in text and "Size: 96x96" in text
    plain = Image.open(batch.images[0].path).convert("RGB").resize((96, 96), Image.Resampling.LANCZOS)
    assert np.abs(pixels(job.images[0].path) - np.asarray(plain)).mean() > 1  # redrawn, not only resized


async def test_vary_is_image_to_image_of_that_picture_with_a_new_seed(rig: Rig, batch) -> None:
    subtle = await drawn(rig, f"/vary #{batch.id} 1 subtle")
    strong = await drawn(rig, f"/vary #{batch.id} 1 strong")
    assert subtle.parent_id == strong.parent_id == batch.id
    config = rig.service.config.actions
    assert (subtle.params.strength, strong.params.strength) == (config.vary_subtle, config.vary_strong)
    assert subtle.params.strength < strong.params.strength
    assert f"Denoising strength: {config.vary_subtle}" in read_parameters(subtle.images[0].path)
    assert f"Denoising strength: {config.vary_strong}" in read_parameters(strong.images[0].path)
    assert subtle.params.seed != batch.params.seed
    # What /imagine with that PNG attached draws at the same strength, seed, size and steps.
    same = await rig.ok(ALICE, f"/imagine {batch.params.prompt} --strength {subtle.params.strength} "
                               f"--seed {subtle.params.seed} {SOURCE} --no {batch.params.negative_prompt}",
                        Attachment("source.png", Path(batch.images[0].path).read_bytes()))
    await rig.finished(same.job.id)
    redraw = await rig.history.get(same.job.id)
    assert np.array_equal(pixels(redraw.images[0].path), pixels(subtle.images[0].path))


async def test_zoom_out_keeps_the_original_in_the_middle_and_pan_on_its_side(rig: Rig, batch) -> None:
    zoom = await drawn(rig, f"/zoom #{batch.id} 1 --factor 2")
    out = pixels(zoom.images[0].path)
    assert out.shape == (64, 64, 3)
    shrunk = np.asarray(Image.open(batch.images[0].path).convert("RGB").resize((32, 32), Image.Resampling.LANCZOS),
                        dtype=np.int16)
    assert np.array_equal(out[20:44, 20:44], shrunk[4:28, 4:28])  # inside the few pixels of feathering
    assert np.abs(out[:12] - out[:12].mean()).mean() > 1  # the border is drawn, not a flat fill
    assert "Zoom out: 2" in read_parameters(zoom.images[0].path)

    pan = await drawn(rig, f"/pan #{batch.id} 2 right")
    out = pixels(pan.images[0].path)
    assert out.shape == (64, 96, 3)
    assert np.array_equal(out[:, :60], pixels(batch.images[1].path)[:, :60])  # the original, on the left
    assert pan.params.direction == "right" and pan.parent_id == batch.id
    up = await drawn(rig, f"/pan #{batch.id} up")
    assert pixels(up.images[0].path).shape == (96, 64, 3)
    assert np.array_equal(pixels(up.images[0].path)[36:], pixels(batch.images[0].path)[4:])  # at the bottom

    for job in (zoom, pan):
        again = await drawn(rig, f"/rerun #{job.id}")
        assert np.array_equal(pixels(again.images[0].path), pixels(job.images[0].path))


async def test_hires_fix_draws_twice_the_size_and_writes_it_as_a1111_does(rig: Rig) -> None:
    await rig.queue.start()
    job = await drawn(rig, f"/imagine a lighthouse --seed 8 {SOURCE} --hires 2")
    assert Image.open(job.images[0].path).size == (128, 128)
    assert (job.params.width, job.params.height, job.params.hires_upscaler) == (64, 64, "Lanczos")
    text = read_parameters(job.images[0].path)
    assert "Size: 64x64" in text
    assert "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, Hires upscaler: Lanczos" in text
    again = await drawn(rig, f"/rerun #{job.id}")
    assert np.array_equal(pixels(again.images[0].path), pixels(job.images[0].path))
    plain = await drawn(rig, f"/rerun #{job.id} hires=1.5 hires-strength=0.3")
    assert Image.open(plain.images[0].path).size == (96, 96) and "Hires upscale: 1.5" in read_parameters(
        plain.images[0].path)


async def test_bad_actions_are_one_line_each_and_queue_nothing(make_rig) -> None:
    rig = await make_rig(limits=LimitsConfig(max_side=128))
    await rig.queue.start()
    batch = await drawn(rig, f"/imagine a red lighthouse --n 2 --seed 40 {FAST}")
    refusals = [
        await rig.refused(ALICE, f"/upscale #{batch.id} 3"),
        await rig.refused(ALICE, f"/upscale #{batch.id} --scale 4"),
        await rig.refused(CAROL, f"/vary #{batch.id}"),  # another chat's job
        await rig.refused(ALICE, f"/zoom #{batch.id} --factor 3"),
        await rig.refused(ALICE, f"/pan #{batch.id}"),
        await rig.refused(ALICE, f"/imagine a cat {FAST} --hires 4"),
        await rig.refused(ALICE, f"/imagine a cat {FAST} --hires-strength 0.3"),
        await rig.refused(ALICE, f"/imagine a cat {FAST} --hires 2 --hires-strength 0.3"),
    ]
    assert refusals == [
        f"job #{batch.id} has 2 images; there is no image 3",
        "4× of 64x64 is 256x256; the limit is 128 per side",
        f"there is no job #{batch.id}",
        "factor must be above 1 and at most 2, got 3",
        "/pan takes one direction: left, right, up or down; e.g. /pan #12 right",
        "--hires 4 of 64x64 is 256x256; the limit is 128 per side",
        "--hires-strength is the hires fix's second pass; add --hires 2 to turn it on",
        "the hires fix's second pass runs int(steps × hires-strength) steps: 2 × 0.3 gives 0; "
        "use at least 4 steps or a higher hires-strength",
    ]
    # Someone in the same chat may act on a picture they can see, like pressing a button under it.
    job = await drawn(rig, f"/vary #{batch.id} 2 strong", owner=BOB)
    assert job.owner.user_id == BOB.user_id and job.parent_id == batch.id
    # Its input is a picture drawn here, not someone's upload: others in the chat may rerun it too.
    assert (await drawn(rig, f"/rerun #{job.id}", owner=ALICE)).parent_id == job.id


async def test_actions_wait_for_a_finished_picture(make_rig) -> None:
    rig = await make_rig()  # its queue is not started: the job stays queued
    reply = await rig.ok(ALICE, f"/imagine a harbour {FAST}")
    assert await rig.refused(ALICE, f"/upscale #{reply.job.id}") == (
        f"job #{reply.job.id} is queued; /upscale works on a finished picture")


async def test_an_esrgan_file_upscales_as_the_network_itself_computes(make_rig, tmp_path: Path) -> None:
    from generation.upscale import load_upscaler
    from tests.generation.test_upscaler import old_esrgan, save

    model = save(old_esrgan(seed=3).state_dict(), tmp_path / "4x-tiny-esrgan.pth")
    rig = await make_rig(upscale=UpscaleConfig(model=str(model)))
    await rig.queue.start()
    batch = await drawn(rig, f"/imagine a red lighthouse --seed 40 {FAST}")
    job = await drawn(rig, f"/upscale #{batch.id}")  # at the network's own scale
    assert job.params.upscaler == "4x-tiny-esrgan.pth" and job.params.scale == 4
    network = load_upscaler(model)
    expected = network.upscale(Image.open(batch.images[0].path).convert("RGB"), tile=4096)
    out = pixels(job.images[0].path)
    assert out.shape == (256, 256, 3)
    assert np.abs(out - np.asarray(expected, dtype=np.int16)).mean() < 2
    assert "Postprocess upscaler: 4x-tiny-esrgan.pth" in read_parameters(job.images[0].path)
    # --scale resizes the network's output; the hires fix enlarges with it too.
    half = await drawn(rig, f"/upscale #{batch.id} --scale 2")
    assert Image.open(half.images[0].path).size == (128, 128)
    hires = await drawn(rig, f"/imagine a cat --seed 2 {FAST} --hires 2")
    assert "Hires upscaler: 4x-tiny-esrgan.pth" in read_parameters(hires.images[0].path)


async def test_a_file_that_is_no_upscaler_is_one_line_and_the_bot_keeps_serving(make_rig, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.pth"
    bogus.write_text("not a network")
    rig = await make_rig(upscale=UpscaleConfig(model=str(bogus)))
    await rig.queue.start()
    batch = await drawn(rig, f"/imagine a red lighthouse --seed 40 {FAST}")
    for line in (f"/upscale #{batch.id}", f"/upscale #{batch.id} --scale 2", f"/imagine a cat {SOURCE} --hires 2"):
        text = await rig.refused(ALICE, line)  # refused before anything is queued, naming the file
        assert "notes.pth" in text and "\n" not in text, text
    await drawn(rig, f"/vary #{batch.id} --steps 4")  # everything else goes on as usual


def test_action_lines_parse_the_job_the_image_and_the_words() -> None:
    command = parse("/vary #12 3 strong", DEFAULTS)
    assert (command.source.job_id, command.source.image, command.variation) == (12, 3, "strong")
    assert parse("/pan left", DEFAULTS).replying_to(7).source.job_id == 7
    assert parse("/upscale #5 --scale 2.5 --denoise 0.2", DEFAULTS).scale == 2.5
    assert parse("/zoom #5 2", DEFAULTS).source.image == 2


def test_action_slash_values_read_as_the_typed_line() -> None:
    from bot.commands import from_options

    command = from_options("upscale", {"job": "12", "image_number": 2, "scale": 2.0, "denoise": None}, DEFAULTS)
    assert (command.source.job_id, command.source.image, command.scale) == (12, 2, 2.0)
    assert from_options("pan", {"job": "#7", "direction": "up"}, DEFAULTS).direction == "up"
    assert from_options("vary", {"variation": "strong"}, DEFAULTS).source.job_id is None


async def test_history_and_describe_say_what_an_action_started_from_and_what_reruns_it(rig: Rig, batch) -> None:
    zoom = await drawn(rig, f"/zoom #{batch.id} 2")
    again = await drawn(rig, f"/rerun #{zoom.id}")
    lines = (await rig.say(ALICE, "/history")).text.splitlines()
    mine = next(line for line in lines if line.startswith(f"#{zoom.id} "))
    assert f"zoom out 2× of #{batch.id} image 2: a red lighthouse" in mine and "rerun of" not in mine
    assert "rerun of #" + str(zoom.id) in next(line for line in lines if line.startswith(f"#{again.id} "))
    described = (await rig.say(ALICE, f"/describe #{zoom.id}")).text.splitlines()
    assert described[0] == f"#{zoom.id} done: a zoom out" and "  source_job: " + str(batch.id) in described
