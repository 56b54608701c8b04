"""The pix2pix 70×70 PatchGAN discriminator, laid out key for key as pytorch-CycleGAN-and-pix2pix's NLayerDiscriminator."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """Real-or-fake for each overlapping 70×70 patch (n_layers=3) of edges and photo stacked as 6 channels.

    state_dict keys match that project's `--netD basic --norm batch` netD: model.0 (conv, bias),
    model.2/5/8 (conv without bias, batch norm follows), model.3/6/9 (batch norm), model.11 (conv, bias).
    """

    def __init__(self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if ndf < 1:
            raise ValueError(f"ndf must be at least 1, got {ndf}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        width = ndf
        for n in range(1, n_layers):  # stride 2, twice as wide each time, up to 8·ndf
            wider = ndf * min(2**n, 8)
            layers += [
                nn.Conv2d(width, wider, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(wider),
                nn.LeakyReLU(0.2, True),
            ]
            width = wider
        wider = ndf * min(2**n_layers, 8)
        layers += [  # stride 1 from here: these two layers widen the receptive field to 70 px
            nn.Conv2d(width, wider, kernel_size=4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(wider),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(wider, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, one per patch: 30×30 for a 256×256 input."""
        return self.model(x)
