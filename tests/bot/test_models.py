"""The model library through the service on tiny models: two named models (SD 1.5 and SDXL) in one session,
each job recording its model by name, a rerun drawing with the job's own model after the default changed,
and every wrong name refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bot.config import StorageConfig
from generation.config import GenerationConfig, ModelEntry, ModelsConfig
from storage.infotext import read_parameters
from tests.bot.rig import ALICE, Rig

FAST = "--size 64x64 --steps 3"


def library(tiny_model: Path, tiny_sdxl: Path, default: str = "sd", **folders: str) -> dict:
    """The config sections of an easel with models "sd" (SD 1.5) and "xl" (SDXL), and [models] `folders`."""
    return dict(generation=GenerationConfig(device="cpu", model=default, preview_every=0),
                models=ModelsConfig(named={"sd": ModelEntry(source=str(tiny_model)),
                                           "xl": ModelEntry(source=str(tiny_sdxl))}, **folders))


async def drawn(rig: Rig, text: str):
    reply = await rig.ok(ALICE, text)
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    assert job.status.value == "done", job.error
    return job


def pixels(job) -> np.ndarray:
    return np.asarray(Image.open(job.images[0].path).convert("RGB"))


async def test_jobs_on_two_named_models_record_each_by_name_and_a_rerun_keeps_its_model(
        make_rig, tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path / "shared")
    rig = await make_rig(storage=storage, **library(tiny_model, tiny_sdxl, default="sd"))
    await rig.queue.start()
    plain = await drawn(rig, f"/imagine a red lighthouse --seed 5 {FAST}")
    xl = await drawn(rig, f"/imagine a red lighthouse --seed 5 --model xl {FAST}")
    assert (plain.params.model, plain.run.family) == ("sd", "sd1")
    assert (xl.params.model, xl.run.family) == ("xl", "sdxl")
    for job, name in ((plain, "sd"), (xl, "xl")):
        text = read_parameters(Path(job.images[0].path))
        assert f"Model: {name}," in text
        assert f"Model hash: {job.run.model_hash[:10]}," in text  # a folder's hash: its UNet weights'
    assert plain.run.model_hash != xl.run.model_hash
    assert not np.array_equal(pixels(plain), pixels(xl))
    assert (await rig.say(ALICE, f"/history #{xl.id}")).text.splitlines()[0].endswith("64x64 · model xl")
    models = (await rig.say(ALICE, "/models")).text
    assert "sd — SD 1.x, default, loaded" in models and "xl — SDXL, loaded, in use" in models
    await rig.queue.stop()

    # The default changes to the SDXL model and easel restarts: /rerun #1 still draws with job 1's model.
    later = await make_rig(storage=storage, **library(tiny_model, tiny_sdxl, default="xl"))
    await later.queue.start()
    again = await drawn(later, f"/rerun #{plain.id}")
    assert again.params.model == "sd"
    assert np.array_equal(pixels(again), pixels(plain))
    fresh = await drawn(later, f"/imagine a red lighthouse --seed 5 {FAST}")
    assert fresh.params.model == "xl" and np.array_equal(pixels(fresh), pixels(xl))


async def test_an_unknown_model_is_one_line_naming_those_configured(make_rig, tiny_model: Path, tiny_sdxl: Path,
                                                                    tmp_path: Path) -> None:
    rig = await make_rig(**library(tiny_model, tiny_sdxl))
    text = await rig.refused(ALICE, f"/imagine a cat --model sd3 {FAST}")
    assert text.count("\n") == 0 and "'sd3'" in text and "sd, xl" in text


async def test_a_rerun_whose_model_is_gone_says_so_and_another_model_is_a_noted_choice(
        make_rig, tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path / "shared")
    rig = await make_rig(storage=storage, **library(tiny_model, tiny_sdxl))
    await rig.queue.start()
    job = await drawn(rig, f"/imagine a red lighthouse --model xl {FAST}")
    await rig.queue.stop()
    only_sd = dict(generation=GenerationConfig(device="cpu", model="sd", preview_every=0),
                   models=ModelsConfig(named={"sd": ModelEntry(source=str(tiny_model))}))
    later = await make_rig(storage=storage, **only_sd)
    text = await later.refused(ALICE, f"/rerun #{job.id}")
    assert f"job #{job.id} drew with model 'xl', which is no longer configured" in text and "--model" in text
    reply = await later.ok(ALICE, f"/rerun #{job.id} --model sd")
    assert "with model sd, not xl: the picture will differ" in reply.text
    assert reply.job.params.model == "sd"


async def test_sdxl_draws_at_its_trained_sizes(make_rig, tiny_model: Path, tiny_sdxl: Path) -> None:
    rig = await make_rig(**library(tiny_model, tiny_sdxl))  # the queue is not started: nothing draws
    assert (await rig.ok(ALICE, "/imagine a cat --model xl")).job.params.width == 1024
    wide = (await rig.ok(ALICE, "/imagine a cat --model xl --ar 16:9")).job.params
    assert (wide.width, wide.height) == (1344, 768)
    tall = (await rig.ok(ALICE, "/imagine a cat --model xl --ar 2:3")).job.params
    assert (tall.width, tall.height) == (832, 1216)
    sd = (await rig.ok(ALICE, "/imagine a cat --ar 16:9")).job.params  # the SD 1.x default keeps [defaults]' area
    assert sd.width * sd.height < 1024 * 1024
    given = (await rig.ok(ALICE, "/imagine a cat --model xl --size 512x512")).job.params
    assert (given.width, given.height) == (512, 512)


async def test_the_queue_says_which_waiting_job_switches_model(make_rig, tiny_model: Path, tiny_sdxl: Path) -> None:
    from tests.bot.rig import CONSOLE

    rig = await make_rig(**library(tiny_model, tiny_sdxl))  # not started: everything waits
    for model in ("sd", "xl", "xl", "sd"):
        await rig.ok(CONSOLE, f"/imagine a cat --model {model} {FAST}")
    lines = (await rig.say(CONSOLE, "/queue")).text.splitlines()
    assert [line.endswith(f"switches to model {name}") for line, name in zip(lines, ("sd", "xl", "xl", "sd"))] == [
        False, True, False, True]


async def test_a_lora_by_its_tag_changes_the_picture_weight_0_does_not_and_bad_ones_are_one_line(
        make_rig, tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    from generation.addons import lora_short_hash
    from generation.tiny import make_tiny_lora

    loras = tmp_path / "loras"
    loras.mkdir()
    style = make_tiny_lora(tiny_model, loras / "style.safetensors")
    make_tiny_lora(tiny_sdxl, loras / "xlstyle.safetensors")
    (loras / "notes.safetensors").write_text("not a LoRA at all\n")
    rig = await make_rig(**library(tiny_model, tiny_sdxl, lora_dir=str(loras)))
    await rig.queue.start()
    prompt = f"a red lighthouse --seed 5 {FAST}"
    plain = await drawn(rig, f"/imagine {prompt}")
    styled = await drawn(rig, f"/imagine a red lighthouse <lora:style:1> --seed 5 {FAST}")
    zero = await drawn(rig, f"/imagine a red lighthouse <lora:style:0> --seed 5 {FAST}")
    assert np.abs(pixels(styled).astype(int) - pixels(plain)).mean() > 2
    assert np.array_equal(pixels(zero), pixels(plain))
    text = read_parameters(Path(styled.images[0].path))
    assert f'Lora hashes: "style: {lora_short_hash(style)}"' in text and "Lora hashes" not in \
        read_parameters(Path(plain.images[0].path))
    assert styled.params.prompt.startswith("a red lighthouse <lora:style:1>")  # recorded as typed
    again = await drawn(rig, f"/rerun #{styled.id}")
    assert np.array_equal(pixels(again), pixels(styled))

    unknown = await rig.refused(ALICE, f"/imagine a boat <lora:nope:1> {FAST}")
    assert "no LoRA named 'nope'" in unknown and "style" in unknown and "\n" not in unknown
    assert await rig.refused(ALICE, f"/imagine a boat <lora:xlstyle:1> {FAST}") == (
        "LoRA 'xlstyle' is an SDXL LoRA, and this model is SD 1.x")
    assert await rig.refused(ALICE, f"/imagine a boat <lora:notes:1> {FAST}") == (
        "'notes.safetensors' is not a safetensors file (its header cannot be read)")
    after = await drawn(rig, f"/imagine {prompt}")  # the next job draws, without any LoRA left behind
    assert np.array_equal(pixels(after), pixels(plain))
    xl = await drawn(rig, f"/imagine a red lighthouse <lora:xlstyle:0.8> --model xl --seed 5 {FAST}")
    assert "xlstyle: " in read_parameters(Path(xl.images[0].path))


async def test_an_embedding_named_in_the_prompt_changes_the_picture_and_is_recorded(
        make_rig, tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    from generation.addons import embedding_short_hash
    from generation.tiny import make_tiny_embedding

    folder = tmp_path / "embeddings"
    folder.mkdir()
    embedding = make_tiny_embedding(tiny_model, folder / "myface.pt")
    make_tiny_embedding(tiny_sdxl, folder / "xlface.safetensors")
    plain_rig = await make_rig(**library(tiny_model, tiny_sdxl))
    rig = await make_rig(**library(tiny_model, tiny_sdxl, embeddings_dir=str(folder)))
    for each in (plain_rig, rig):
        await each.queue.start()
    text = f"/imagine portrait of myface --seed 5 {FAST}"
    as_words, as_embedding = await drawn(plain_rig, text), await drawn(rig, text)
    assert not np.array_equal(pixels(as_words), pixels(as_embedding))
    assert f"TI hashes: \"myface: {embedding_short_hash(embedding)}\"" in read_parameters(
        Path(as_embedding.images[0].path))
    other = f"/imagine portrait of a stranger --seed 5 {FAST}"  # no name: the same picture as without embeddings
    assert np.array_equal(pixels(await drawn(plain_rig, other)), pixels(await drawn(rig, other)))
    xl = await drawn(rig, f"/imagine portrait of xlface --model xl --seed 5 {FAST}")
    assert "TI hashes: \"xlface: " in read_parameters(Path(xl.images[0].path))


async def test_an_sdxl_sketch_needs_an_sdxl_controlnet_and_draws_at_sdxl_size(
        make_rig, tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    from bot.replies import Attachment
    from generation.config import SketchConfig
    from generation.tiny import make_tiny_controlnet
    from tests.bot.rig import png

    drawing = Attachment("d.png", png(120, 80))
    rig = await make_rig(**library(tiny_model, tiny_sdxl))
    text = await rig.refused(ALICE, "/sketch a house --model xl --mode scribble", drawing)
    assert "[sketch] controlnet_sdxl" in text and "--model" in text
    controlnet = make_tiny_controlnet(tiny_sdxl, tmp_path / "controlnet-xl")
    rig = await make_rig(**library(tiny_model, tiny_sdxl), sketch=SketchConfig(controlnet_sdxl=str(controlnet)))
    params = (await rig.ok(ALICE, "/sketch a house --model xl --mode scribble", drawing)).job.params
    assert params.model == "xl" and params.width * params.height >= 900 * 900  # SDXL's pixel count, not 512²


async def test_a_model_with_a_refiner_finishes_with_it_unless_told_otherwise(make_rig, tiny_model: Path,
                                                                             tiny_sdxl: Path) -> None:
    setup = library(tiny_model, tiny_sdxl)
    named = {**setup["models"].named, "xl": ModelEntry(source=str(tiny_sdxl), refiner=str(tiny_sdxl))}
    rig = await make_rig(generation=setup["generation"], models=ModelsConfig(named=named))
    assert (await rig.ok(ALICE, f"/imagine a cat --model xl {FAST}")).job.params.refiner == 0.8
    assert (await rig.ok(ALICE, f"/imagine a cat --model xl --refiner 0.7 {FAST}")).job.params.refiner == 0.7
    assert (await rig.ok(ALICE, f"/imagine a cat --model xl --refiner 0 {FAST}")).job.params.refiner is None
    assert (await rig.ok(ALICE, f"/imagine a cat {FAST}")).job.params.refiner is None  # sd has none
    assert "sd has none" in await rig.refused(ALICE, f"/imagine a cat --refiner 0.5 {FAST}")
    await rig.queue.start()
    job = await drawn(rig, f"/imagine a red lighthouse --model xl --seed 5 {FAST}")
    assert job.run.refiner == str(tiny_sdxl)
    assert "Refiner switch at: 0.8" in read_parameters(Path(job.images[0].path))
