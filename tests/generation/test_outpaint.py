"""Zoom out and pan on the engine: the canvas and mask the model sees, the original put back, and a dedicated
inpainting UNet ([actions] inpaint_model) in place of the model's own when one is set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.config import ActionsConfig, GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.diffusion.actions import FEATHER, OVERLAP, canvas_and_mask, paste_back
from generation.engine import ModelLoadError
from generation.tiny import make_tiny_model
from storage.params import PanParams, ZoomParams
from storage.params.outpaint import pan_layout, zoom_layout
from tests.conftest import params
from tests.helpers import Recorder, pixels


def picture(size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def zoom(seed: int = 3) -> ZoomParams:
    return ZoomParams(prompt="a harbour", seed=seed, steps=3, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m",
                      source_job=1, input_sha256="0" * 64, factor=2.0)


@pytest.mark.parametrize(("direction", "size", "box"), [
    ("right", (96, 64), (0, 0, 64, 64)), ("left", (96, 64), (32, 0, 64, 64)),
    ("down", (64, 96), (0, 0, 64, 64)), ("up", (64, 96), (0, 32, 64, 64)),
])
def test_pan_grows_the_canvas_by_half_on_its_side(direction: str, size, box) -> None:
    assert pan_layout((64, 64), direction) == (size, box)
    assert pan_layout((512, 512), "right")[0] == (768, 512)


def test_zoom_keeps_the_size_and_centres_the_shrunk_original() -> None:
    assert zoom_layout((512, 512), 2.0) == ((512, 512), (128, 128, 256, 256))
    assert zoom_layout((64, 48), 1.5) == ((64, 48), (10, 8, 43, 32))


def test_the_mask_covers_the_new_part_and_a_seam_of_the_original_only() -> None:
    original = picture()
    canvas, mask = canvas_and_mask(original, (96, 64), (0, 0, 64, 64))  # a pan right
    drawn = np.asarray(mask) > 127
    assert drawn[:, 64:].all()  # the new part
    assert drawn[:, 64 - OVERLAP:64].all() and not drawn[:, :64 - OVERLAP].any()  # one latent of overlap
    assert np.array_equal(pixels(canvas)[:, :64], pixels(original))  # the canvas starts from the original
    _, mask = canvas_and_mask(original, (64, 64), (16, 16, 32, 32))  # a zoom: a seam on every side
    drawn = np.asarray(mask) > 127
    assert drawn[:24].all() and drawn[40:].all() and not drawn[24:40, 24:40].any()


def test_paste_back_keeps_the_original_exactly_inside_its_feathered_seam() -> None:
    original, drawn = picture(seed=1), Image.new("RGB", (96, 64), (10, 200, 30))
    out = pixels(paste_back(drawn, original, (32, 0, 64, 64)))  # a pan left: the seam is on the original's left
    assert np.array_equal(out[:, 32 + FEATHER + 1:], pixels(original)[:, FEATHER + 1:])
    assert np.array_equal(out[:, :32], pixels(drawn)[:, :32])  # what the model drew stays
    seam = np.abs(out[:, 32:32 + FEATHER + 1] - pixels(original)[:, :FEATHER + 1]).mean()
    assert 0 < seam  # faded in, not cut


@pytest.fixture(scope="module")
def inpainting(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-inpaint"), seed=1, in_channels=9)
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                           actions=ActionsConfig(inpaint_model=str(model)))


def test_an_inpainting_unet_draws_the_border_in_place_of_the_models_own(inpainting, tiny_model: Path) -> None:
    own = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))
    source = picture()
    theirs, mine = inpainting.run(zoom(), (source,), Recorder()), own.run(zoom(), (source,), Recorder())
    assert theirs.run.controlnet.startswith("inpaint:") and mine.run.controlnet is None
    out, other = pixels(theirs.images[0]), pixels(mine.images[0])
    shrunk = pixels(source.resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(out[20:44, 20:44], shrunk[4:28, 4:28])  # the original in the middle, either way
    assert np.abs(out[:12] - other[:12]).mean() > 1  # another UNet drew the border
    assert inpainting._active.inpaint.unet is not inpainting._txt2img.unet
    assert inpainting._active.inpaint.vae is inpainting._txt2img.vae  # its own VAE and text encoder: none loaded
    again = inpainting.run(zoom(), (source,), Recorder())
    assert np.array_equal(pixels(again.images[0]), out)


def test_a_model_that_is_no_inpainting_model_is_one_line(tiny_model: Path) -> None:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                             actions=ActionsConfig(inpaint_model=str(tiny_model)))
    pan = PanParams(prompt="a harbour", seed=1, steps=2, cfg=7.0, width=96, height=64, scheduler="dpmpp_2m",
                    source_job=1, input_sha256="0" * 64, direction="right")
    with pytest.raises(ModelLoadError) as refused:
        engine.run(pan, (picture(),), Recorder())
    assert str(refused.value) == (f"[actions] inpaint_model {str(tiny_model)!r} is no inpainting model: its UNet "
                                  "takes 4 channels, an inpainting UNet 9 (image, mask and masked image)")
    with pytest.raises(ModelLoadError):  # each zoom or pan says so again (the setting may be fixed meanwhile)
        engine.run(zoom(), (picture(),), Recorder())
    assert len(engine.run(params(seed=1), (), Recorder()).images) == 1  # every other kind draws as before
