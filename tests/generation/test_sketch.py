"""Sketch jobs in the diffusion engine: a ControlNet on the SAME Stable Diffusion modules, steered by the
stored control image, reproducible, recorded; the tiny model and a tiny ControlNet, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generation.config import GenerationConfig, SketchConfig
from generation.diffusion import DiffusionEngine
from generation.engine import ModelLoadError
from storage.infotext import infotext
from storage.params import SketchParams
from tests.helpers import Recorder, pixels


def sketch_params(**changes: object) -> SketchParams:
    fields = dict(prompt="a small house", seed=7, steps=3, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m",
                  input_sha256="0" * 64, control_sha256="1" * 64)
    return SketchParams(**{**fields, **changes})


def drawing(offset: int = 0) -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    pen = ImageDraw.Draw(image)
    pen.rectangle((12 + offset, 24, 52, 56), outline="white", width=3)  # a house: walls…
    pen.line((12 + offset, 24, 32, 6, 52, 24), fill="white", width=3)  # …and a roof
    return image


@pytest.fixture
def engine(tiny_model: Path, tiny_controlnet: Path) -> DiffusionEngine:
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                           SketchConfig(controlnet=str(tiny_controlnet)))


def test_the_controlnet_pipeline_shares_every_module_of_text_to_image(engine: DiffusionEngine) -> None:
    engine.run(sketch_params(), (drawing(),), Recorder())
    plain, controlled = engine._txt2img, engine._active.controlled
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(controlled, name) is getattr(plain, name), name  # one copy of the base model
    assert controlled.controlnet is not None


def test_a_sketch_follows_its_drawing_and_redraws_pixel_for_pixel(engine: DiffusionEngine, tiny_controlnet) -> None:
    progress = Recorder()
    first = engine.run(sketch_params(), (drawing(),), progress)
    again = engine.run(sketch_params(), (drawing(),), Recorder())
    other = engine.run(sketch_params(), (drawing(offset=-8),), Recorder())
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))  # the lines steer the picture
    weaker = engine.run(sketch_params(control_scale=0.2), (drawing(),), Recorder())
    assert not np.array_equal(pixels(first.images[0]), pixels(weaker.images[0]))
    assert progress.steps[-1] == (3, 3) and first.run.controlnet == str(tiny_controlnet)
    text = infotext(sketch_params(control_scale=0.75), 7, first.run)
    assert 'ControlNet 0: "Module: none, Model: ' in text and "Weight: 0.75" in text and "Guidance End: 1" in text


def test_text_to_image_draws_the_same_before_and_after_a_sketch(engine: DiffusionEngine) -> None:
    from tests.conftest import params

    before = engine.run(params(), (), Recorder()).images[0]
    engine.run(sketch_params(), (drawing(),), Recorder())
    after = engine.run(params(), (), Recorder()).images[0]
    assert np.array_equal(pixels(before), pixels(after))


def test_a_controlnet_that_cannot_be_loaded_says_which_setting(tiny_model: Path, tmp_path: Path) -> None:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                             SketchConfig(controlnet=str(tmp_path)))  # a folder without a ControlNet
    with pytest.raises(ModelLoadError, match=r"could not load the ControlNet .* \(\[sketch\] controlnet\)"):
        engine.run(sketch_params(), (drawing(),), Recorder())
    assert engine._active.controlled is None  # tried again on the next sketch job


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_hooks_once_and_switching_kinds_redraws_the_same_pixels(
    tiny_model: Path, tiny_controlnet: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
) -> None:
    import dataclasses

    import generation.diffusion.loading as loading
    from storage.params import Img2ImgParams, Txt2ImgParams

    common = dict(prompt="a small house", seed=7, steps=3, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m")
    jobs = [(Txt2ImgParams(**common), ()), (Img2ImgParams(**common, strength=0.6, input_sha256="0" * 64), (drawing(),)),
            (sketch_params(), (drawing(),)), (Txt2ImgParams(**common), ()), (sketch_params(), (drawing(),)),
            (Img2ImgParams(**common, strength=0.6, input_sha256="0" * 64), (drawing(),))]
    plain = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                            SketchConfig(controlnet=str(tiny_controlnet)))
    expected = [plain.run(job, inputs, Recorder()).images[0] for job, inputs in jobs]

    # Offload hooks are real accelerate hooks; only the plan is forced, since the CPU never offloads by itself.
    original = loading.plan_memory
    monkeypatch.setattr(loading, "plan_memory",
                        lambda *a, **k: dataclasses.replace(original(*a, **k), offload=mode))
    offloaded = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                                SketchConfig(controlnet=str(tiny_controlnet)))
    drawn = [offloaded.run(job, inputs, Recorder()).images[0] for job, inputs in jobs]
    for index, (want, got) in enumerate(zip(expected, drawn)):
        assert np.array_equal(pixels(want), pixels(got)), jobs[index][0].kind
    # Hooked on the first job, once more when the ControlNet joined; never again for txt2img ⇄ img2img ⇄ sketch.
    assert offloaded._active.offload.installs == 2
    assert hasattr(offloaded._txt2img.unet, "_hf_hook") and hasattr(offloaded._active.controlled.controlnet, "_hf_hook")
