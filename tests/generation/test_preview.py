"""Latent previews: a fixed linear map from SD's four latent channels to RGB, scaled up."""

from __future__ import annotations

import numpy as np
import torch

from generation.diffusion.preview import LATENT_RGB, latent_preview


def test_square_latent_is_scaled_up_to_max_side() -> None:
    preview = latent_preview(torch.randn(1, 4, 8, 8))
    assert preview.mode == "RGB"
    assert preview.size == (256, 256)


def test_aspect_ratio_is_kept_and_scale_is_whole() -> None:
    preview = latent_preview(torch.randn(1, 4, 8, 12), max_side=128)  # a 96x64 image's latent
    assert preview.size == (120, 80)  # 128 // 12 = 10


def test_big_latent_is_not_scaled() -> None:
    assert latent_preview(torch.randn(1, 4, 96, 128), max_side=64).size == (128, 96)


def test_colour_comes_from_the_latent_rgb_table() -> None:
    latents = torch.zeros(1, 4, 2, 2)
    latents[0, 0] = 1.0  # only the first channel
    pixel = np.asarray(latent_preview(latents, max_side=2))[0, 0]
    expected = ((LATENT_RGB[0] + 1) * 127.5).to(torch.uint8).numpy()
    assert pixel.tolist() == expected.tolist() == [165, 153, 154]


def test_values_are_clamped_not_wrapped() -> None:
    bright = np.asarray(latent_preview(torch.full((1, 4, 2, 2), 0.0) + torch.tensor([100.0, 100.0, 100.0, -100.0]).view(1, 4, 1, 1)))
    assert (bright == 255).all()
    dark = np.asarray(latent_preview(torch.tensor([-100.0, -100.0, -100.0, 100.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)))
    assert (dark == 0).all()


def test_only_the_first_image_of_a_batch_is_shown() -> None:
    first = torch.randn(1, 4, 8, 8)
    batch = torch.cat([first, torch.randn(3, 4, 8, 8) * 10])
    assert np.array_equal(np.asarray(latent_preview(batch)), np.asarray(latent_preview(first)))


def test_unknown_latent_space_is_grey() -> None:
    array = np.asarray(latent_preview(torch.randn(1, 16, 8, 8)))
    assert array.shape == (256, 256, 3)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert array.std() > 0  # not a blank square


def test_half_precision_latents_that_need_grad() -> None:
    latents = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert latent_preview(latents.half()).size == (256, 256)
