"""StyleGAN2's layers: equalised-learning-rate linear, modulated synthesis conv, to-RGB, and one synthesis block."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from generation.faces.stylegan2.ops import activation_of, bias_act, modulated_conv2d, setup_filter, upsample2d


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: weight·lr/sqrt(in), bias·lr, then activation."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
        lr_multiplier: float = 1.0, bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        activation_of(activation)
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)



class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally ×2 upsampling), per-pixel noise, bias, lrelu·sqrt(2), clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
        up: int = 1, use_noise: bool = True, activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        activation_of(activation)
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_of(activation)[1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up,
                             resample_filter=self.resample_filter, padding=self.padding)
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            x = x + noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        # NVIDIA clamps at conv_clamp × the layer's extra gain, which is 1 in the 'skip' architecture.
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to colour, no demodulation; styles scaled by 1/sqrt(in·k·k)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: (const | conv0 ↑2), conv1, torgb added to the upsampled image."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
        resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
        **layer_kwargs: object,
    ) -> None:
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels = img_channels
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter))
        img = img + y if img is not None else y
        return x, img

