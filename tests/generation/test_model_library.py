"""The engine's model library on tiny models: SD 1.5 and SDXL side by side, every diffusion kind on SDXL, the
least recently used model let go past [models] keep_in_ram, and family detection without loading weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.config import GenerationConfig, ModelEntry, ModelsConfig, SketchConfig
from generation.diffusion import DiffusionEngine
from generation.engine import ModelLoadError
from generation.models import UnknownModel, catalog, detect_family, sdxl_size
from generation.tiny import make_tiny_controlnet
from storage.errors import EaselError
from storage.params import (Img2ImgParams, PanParams, SketchParams, Txt2ImgParams, UpscaleParams, VaryParams,
                            ZoomParams)
from tests.helpers import Recorder, pixels

COMMON = dict(prompt="a (red:1.2) lighthouse BREAK at dusk", negative_prompt="fog", seed=3, count=1, steps=3,
              cfg=7.0, width=64, height=64, scheduler="dpmpp_2m")


def library(tiny_model: Path, tiny_sdxl: Path, keep: int = 2, **sketch) -> DiffusionEngine:
    models = ModelsConfig(keep_in_ram=keep, named={"sd": ModelEntry(source=str(tiny_model)),
                                                    "xl": ModelEntry(source=str(tiny_sdxl))})
    return DiffusionEngine(GenerationConfig(device="cpu", model="sd", preview_every=0),
                           sketch=SketchConfig(**sketch), models=models)


def picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def engine(tiny_model: Path, tiny_sdxl: Path) -> DiffusionEngine:
    return library(tiny_model, tiny_sdxl)


def test_every_diffusion_kind_draws_on_sdxl_and_records_the_family(engine: DiffusionEngine) -> None:
    source = picture()
    jobs = [
        (Txt2ImgParams(**COMMON, model="xl"), ()),
        (Txt2ImgParams(**COMMON, model="xl", hires=1.5, hires_strength=0.7), ()),
        (Img2ImgParams(**COMMON, model="xl", strength=0.7, input_sha256="0" * 64), (source,)),
        (VaryParams(**COMMON, model="xl", strength=0.7, input_sha256="0" * 64, source_job=1), (source,)),
        (ZoomParams(**COMMON, model="xl", source_job=1, input_sha256="0" * 64, factor=2.0), (source,)),
        (PanParams(**{**COMMON, "width": 96}, model="xl", source_job=1, input_sha256="0" * 64, direction="right"),
         (source,)),
        (UpscaleParams(**{**COMMON, "width": 128, "height": 128}, model="xl", source_job=1, input_sha256="0" * 64,
                       scale=2.0, denoise=0.5), (source,)),
    ]
    for params, inputs in jobs:
        result = engine.run(params, inputs, Recorder())
        size = tuple(params.hires_size) if getattr(params, "hires", 0) else (params.width, params.height)
        assert result.images[0].size == size, params.kind
        assert result.run.family == "sdxl" and result.run.model == engine.specs["xl"].source, params.kind
    assert engine.loaded[-1] == "xl"


def test_sdxl_draws_the_same_picture_again_and_another_than_sd15(engine: DiffusionEngine) -> None:
    xl = Txt2ImgParams(**COMMON, model="xl")
    first = pixels(engine.run(xl, (), Recorder()).images[0])
    plain = pixels(engine.run(xl.replace(model="sd"), (), Recorder()).images[0])
    again = pixels(engine.run(xl, (), Recorder()).images[0])  # moved back from RAM, not reloaded
    assert np.array_equal(first, again)
    assert not np.array_equal(first, plain)


def test_sketches_on_sdxl_need_an_sdxl_controlnet(tiny_model: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    sketch = SketchParams(**COMMON, model="xl", input_sha256="0" * 64, control_sha256="0" * 64, mode="scribble")
    drawing = Image.new("RGB", (64, 64), "white")
    with pytest.raises(ModelLoadError, match=r"controlnet_sdxl"):
        library(tiny_model, tiny_sdxl).run(sketch, (drawing,), Recorder())
    controlnet = make_tiny_controlnet(tiny_sdxl, tmp_path / "controlnet-xl")
    engine = library(tiny_model, tiny_sdxl, controlnet_sdxl=str(controlnet))
    result = engine.run(sketch, (drawing,), Recorder())
    assert result.run.controlnet == str(controlnet) and result.run.family == "sdxl"


def test_past_keep_in_ram_the_least_recently_used_model_is_let_go(tiny_model: Path, tiny_sdxl: Path) -> None:
    engine = library(tiny_model, tiny_sdxl, keep=1)
    engine.run(Txt2ImgParams(**COMMON, model="sd"), (), Recorder())
    engine.run(Txt2ImgParams(**COMMON, model="xl"), (), Recorder())
    assert engine.loaded == ["xl"]
    with pytest.raises(UnknownModel, match=r"no model is named 'nope' here; configured: sd, xl"):
        engine.run(Txt2ImgParams(**COMMON, model="nope"), (), Recorder())
    assert engine.loaded == ["xl"]


def test_families_are_read_from_folders_checkpoints_and_names(tiny_model: Path, tiny_sdxl: Path,
                                                              tmp_path: Path) -> None:
    assert (detect_family(str(tiny_model)), detect_family(str(tiny_sdxl))) == ("sd1", "sdxl")
    for keys, family in ((["conditioner.embedders.1.model.ln_final.weight"], "sdxl"),
                         (["cond_stage_model.model.ln_final.weight"], "sd2"),
                         (["cond_stage_model.transformer.text_model.final_layer_norm.weight"], "sd1")):
        header = json.dumps({key: {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]} for key in keys}).encode()
        checkpoint = tmp_path / f"{family}.safetensors"
        checkpoint.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
        assert detect_family(str(checkpoint)) == family
    assert detect_family("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    assert detect_family("stabilityai/stable-diffusion-2-1") == "sd2"
    assert detect_family("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd1"


def test_the_default_is_a_named_table_or_the_model_called_default() -> None:
    named = ModelsConfig(named={"xl": ModelEntry(source="stabilityai/stable-diffusion-xl-base-1.0")})
    assert list(catalog(GenerationConfig(model="xl"), named)) == ["xl"]
    specs = catalog(GenerationConfig(model="some/model"), named)
    assert list(specs) == ["default", "xl"] and specs["default"].source == "some/model"
    clash = ModelsConfig(named={"default": ModelEntry(source="a/b")})
    with pytest.raises(EaselError, match="default"):
        catalog(GenerationConfig(model="some/model"), clash)


def test_sdxl_sizes_follow_the_aspect_ratio() -> None:
    assert sdxl_size(1, 1) == (1024, 1024)
    assert sdxl_size(16, 9) == (1344, 768) and sdxl_size(9, 16) == (768, 1344)
    assert sdxl_size(21, 9) == (1536, 640) and sdxl_size(4, 3) == (1152, 896)


def test_two_models_sketch_with_one_copy_of_the_controlnet(tiny_model: Path, tiny_controlnet: Path) -> None:
    models = ModelsConfig(named={"one": ModelEntry(source=str(tiny_model)), "two": ModelEntry(source=str(tiny_model))})
    engine = DiffusionEngine(GenerationConfig(device="cpu", model="one", preview_every=0),
                             sketch=SketchConfig(controlnet=str(tiny_controlnet)), models=models)
    sketch = SketchParams(**COMMON, input_sha256="0" * 64, control_sha256="0" * 64, mode="scribble")
    drawing = Image.new("RGB", (64, 64), "white")
    first = engine.run(sketch.replace(model="one"), (drawing,), Recorder()).images[0]
    second = engine.run(sketch.replace(model="two"), (drawing,), Recorder()).images[0]
    assert engine._loaded["one"].controlled.controlnet is engine._loaded["two"].controlled.controlnet
    assert np.array_equal(pixels(first), pixels(second))  # the same weights, loaded twice under two names


def test_a_model_hash_is_computed_once_and_remembered_across_restarts(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import os

    import generation.files as files

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    monkeypatch.setenv(files.HASH_CACHE, str(tmp_path / "model-hashes.json"))
    monkeypatch.setattr(files, "_HASHES", {})
    first = files.sha256(weights)
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setattr(files, "_HASHES", {})  # a restart: only the file remembers
    monkeypatch.setattr(files, "_digest", lambda *args: pytest.fail("a remembered file was hashed again"))
    assert files.sha256(weights) == first
    monkeypatch.undo()
    monkeypatch.setenv(files.HASH_CACHE, str(tmp_path / "model-hashes.json"))
    weights.write_bytes(b"other weights")  # a new version of the file is hashed anew
    os.utime(weights, ns=(1, 1))
    assert files.sha256(weights) == hashlib.sha256(b"other weights").hexdigest()


def test_an_sdxl_refiner_finishes_the_picture_on_the_models_own_text_encoder_and_vae(tiny_sdxl: Path,
                                                                                     tmp_path: Path) -> None:
    from generation.tiny import make_tiny_model
    from storage.infotext import infotext

    def engine_with(refiner: str) -> DiffusionEngine:
        models = ModelsConfig(named={"xl": ModelEntry(source=str(tiny_sdxl), refiner=refiner)})
        return DiffusionEngine(GenerationConfig(device="cpu", model="xl", preview_every=0), models=models)

    plain = Txt2ImgParams(**{**COMMON, "steps": 5}, model="xl")
    refined = plain.replace(refiner=0.6)
    alone = engine_with("").run(plain, (), Recorder())
    # A "refiner" with the model's own weights continues exactly where the model stopped: the hand-over is exact.
    same = engine_with(str(tiny_sdxl))
    progress = Recorder()
    handed = same.run(refined, (), progress)
    assert handed.run.refiner == str(tiny_sdxl) and alone.run.refiner is None
    assert np.array_equal(pixels(handed.images[0]), pixels(alone.images[0]))
    assert progress.steps[-1] == (5, 5) and [done for done, _ in progress.steps] == [1, 2, 3, 4, 5]  # one bar
    model = same._loaded["xl"]
    assert model.refiner.vae is model.txt2img.vae and model.refiner.text_encoder_2 is model.txt2img.text_encoder_2
    assert "Refiner: tiny-sdxl0, Refiner switch at: 0.6" in infotext(refined, 3, handed.run)
    # Another refiner finishes it differently, the same way every time.
    other = engine_with(str(make_tiny_model(tmp_path / "refiner", seed=1, family="sdxl")))
    finished = other.run(refined, (), Recorder()).images[0]
    assert not np.array_equal(pixels(finished), pixels(alone.images[0]))
    assert np.array_equal(pixels(other.run(refined, (), Recorder()).images[0]), pixels(finished))
    with pytest.raises(ModelLoadError, match=r"--refiner 0"):
        engine_with("").run(refined, (), Recorder())


def test_models_naming_the_same_vae_share_one_copy(tiny_model: Path) -> None:
    vae = str(tiny_model / "vae")  # a diffusers VAE folder
    models = ModelsConfig(named={"one": ModelEntry(source=str(tiny_model), vae=vae),
                                 "two": ModelEntry(source=str(tiny_model), vae=vae),
                                 "own": ModelEntry(source=str(tiny_model))})
    engine = DiffusionEngine(GenerationConfig(device="cpu", model="one", preview_every=0),
                             models=models.model_copy(update=dict(keep_in_ram=3)))
    one, two, own = (engine.load(name) for name in ("one", "two", "own"))
    assert one.txt2img.vae is two.txt2img.vae and own.txt2img.vae is not one.txt2img.vae
    drawn = [pixels(engine.run(Txt2ImgParams(**COMMON, model=name), (), Recorder()).images[0])
             for name in ("one", "two", "own")]
    assert np.array_equal(drawn[0], drawn[1]) and np.array_equal(drawn[0], drawn[2])  # the same weights


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_loras_and_embeddings_under_offload_draw_what_they_draw_without_it(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    import dataclasses

    import generation.diffusion.loading as loading
    from generation.tiny import make_tiny_embedding, make_tiny_lora

    for folder in ("loras", "embeddings"):
        (tmp_path / folder).mkdir()
    make_tiny_lora(tiny_model, tmp_path / "loras" / "style.safetensors")
    make_tiny_embedding(tiny_model, tmp_path / "embeddings" / "myface.pt")
    models = ModelsConfig(lora_dir=str(tmp_path / "loras"), embeddings_dir=str(tmp_path / "embeddings"))
    jobs = [Txt2ImgParams(**{**COMMON, "prompt": "a house <lora:style:0.8>"}),
            Txt2ImgParams(**{**COMMON, "prompt": "portrait of myface"}), Txt2ImgParams(**COMMON)]

    def drawn() -> list[np.ndarray]:
        engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0), models=models)
        pictures = [pixels(engine.run(job, (), Recorder()).images[0]) for job in jobs]
        assert not getattr(engine._txt2img, "_all_hooks", None)  # diffusers' own offload was never switched on
        return pictures

    expected = drawn()
    original = loading.plan_memory  # only the plan is forced: the CPU never offloads by itself
    monkeypatch.setattr(loading, "plan_memory", lambda *a, **k: dataclasses.replace(original(*a, **k), offload=mode))
    for index, (want, got) in enumerate(zip(expected, drawn())):
        assert np.array_equal(want, got), (index, np.abs(want - got).max())
