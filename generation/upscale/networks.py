"""The two ESRGAN-family networks easel runs: RRDBNet (ESRGAN, Real-ESRGAN x4plus) and SRVGGNetCompact.

Module names follow BasicSR's "new" layout (`conv_first`, `body.N.rdb1.conv1`, `conv_up1`, …) and
Real-ESRGAN's compact layout (`body.K`), so their state dicts load as they are; the loader renames the
original ESRGAN layout (`model.0`, `model.1.sub.N.RDB1.conv1.0`, …) to the new names first.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_SLOPE = 0.2  # LeakyReLU slope of every ESRGAN activation
_RESIDUAL = 0.2  # ESRGAN scales each dense block's residual by 0.2 before adding it back


class DenseBlock(nn.Module):
    """Five 3×3 convolutions, each seeing the input and every earlier output (ESRGAN's residual dense block)."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(features + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(features + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(features + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), _SLOPE))
        return x + _RESIDUAL * self.conv5(torch.cat(seen, 1))


class RRDB(nn.Module):
    """Three dense blocks in a row, with their own scaled residual around them."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(features, growth)
        self.rdb2 = DenseBlock(features, growth)
        self.rdb3 = DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _RESIDUAL * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN's generator: `blocks` RRDBs at low resolution, then `upsamplings` × (nearest 2×, conv, LeakyReLU).

    `unshuffle` > 1 is BasicSR's trick for scales 2 and 1: the input is pixel-unshuffled by 2 or 4 first
    (so `conv_first` sees 4 or 16 × the image's channels) and the usual 4× upsampling brings it back.
    The net scale is 2**upsamplings / unshuffle.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, features: int = 64, blocks: int = 23,
                 growth: int = 32, upsamplings: int = 2, unshuffle: int = 1) -> None:
        super().__init__()
        if (2**upsamplings) % unshuffle:
            raise ValueError(f"2**{upsamplings} upsampling is not a whole multiple of the {unshuffle}× unshuffle")
        self.unshuffle = unshuffle
        self.upsamplings = upsamplings
        self.scale = 2**upsamplings // unshuffle
        self.in_channels = in_channels
        self.multiple = unshuffle  # picture sides must divide by the unshuffle factor
        self.conv_first = nn.Conv2d(in_channels * unshuffle**2, features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, padding=1)
        for k in range(1, upsamplings + 1):
            self.add_module(f"conv_up{k}", nn.Conv2d(features, features, 3, padding=1))
        self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for k in range(1, self.upsamplings + 1):
            upsampled = F.interpolate(features, scale_factor=2, mode="nearest")
            features = F.leaky_relu(getattr(self, f"conv_up{k}")(upsampled), _SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(features), _SLOPE))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network: a plain stack of 3×3 convs at low resolution, a pixel shuffle, plus the
    nearest-upsampled input (so the network only learns the difference)."""

    def __init__(self, *, channels: int = 3, features: int = 64, convs: int = 16, scale: int = 4,
                 activation: str = "prelu") -> None:
        super().__init__()
        if activation not in ("prelu", "relu"):
            raise ValueError(f"activation must be 'prelu' or 'relu', got {activation!r}")
        self.scale = scale
        self.in_channels = channels
        self.multiple = 1

        def act() -> nn.Module:
            return nn.PReLU(num_parameters=features) if activation == "prelu" else nn.ReLU()

        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), act()]
        for _ in range(convs):
            layers += [nn.Conv2d(features, features, 3, padding=1), act()]
        layers.append(nn.Conv2d(features, channels * scale**2, 3, padding=1))
        self.body = nn.ModuleList(layers)  # indices match Real-ESRGAN's keys: convs even, activations odd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return F.pixel_shuffle(out, self.scale) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
