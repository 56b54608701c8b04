"""Cheap previews: SD latents → RGB by a fixed linear map, no VAE call."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Approximate contribution of each of SD 1.x/2.x's four latent channels to R, G and B
# (a least-squares fit of VAE decodes, as used by the AUTOMATIC1111 "Approx cheap" preview).
LATENT_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


def latent_preview(latents: torch.Tensor, max_side: int = 256) -> Image.Image:
    """An RGB preview of the first image in a latent batch (1/8 of the output size, scaled up)."""
    latent = latents[0].detach().float().cpu()
    if latent.shape[0] == LATENT_RGB.shape[0]:
        rgb = torch.einsum("chw,cr->hwr", latent, LATENT_RGB)
    else:  # an unknown latent space: show its mean as grey rather than nothing
        rgb = latent.mean(0, keepdim=True).permute(1, 2, 0).expand(-1, -1, 3)
    array = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(array), "RGB")
    height, width = array.shape[:2]
    scale = max(1, max_side // max(height, width))
    return image.resize((width * scale, height * scale), Image.Resampling.NEAREST)
