"""The tiny random-weight pipelines the tests draw with: SD 1.5-shaped (the default, an inpainting variant)
and SDXL-shaped, each loadable by diffusers' own pipeline for its family and drawing a seed the same twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

from generation.tiny import make_tiny_model
from tests.helpers import pixels


def draw(pipe, seed: int) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a small house", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(seed)).images[0]
    return pixels(image)


def test_a_seed_writes_the_same_weights_and_another_seed_others(tmp_path: Path) -> None:
    first, again, other = (make_tiny_model(tmp_path / name, seed=seed) for name, seed in
                           (("a", 0), ("b", 0), ("c", 1)))
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (first / weights).read_bytes() == (again / weights).read_bytes()
    assert (first / weights).read_bytes() != (other / weights).read_bytes()


def test_the_sdxl_shape_has_two_text_encoders_and_size_conditioning(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "xl", family="sdxl")
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.unet.config.cross_attention_dim == (pipe.text_encoder.config.hidden_size
                                                    + pipe.text_encoder_2.config.hidden_size)
    first = draw(pipe, 1)
    assert first.shape == (64, 64, 3) and first.std() > 1
    assert np.array_equal(draw(pipe, 1), first) and not np.array_equal(draw(pipe, 2), first)


def test_the_default_shape_is_sd15_and_in_channels_9_an_inpainting_unet(tmp_path: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(make_tiny_model(tmp_path / "sd"), safety_checker=None)
    assert not hasattr(pipe, "text_encoder_2") and draw(pipe, 1).shape == (64, 64, 3)
    unet = UNet2DConditionModel.from_pretrained(make_tiny_model(tmp_path / "inpaint", in_channels=9), subfolder="unet")
    assert unet.config.in_channels == 9
