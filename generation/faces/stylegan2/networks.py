"""StyleGAN2's networks: mapping (z → w), synthesis (ws → image), and the Generator that holds both."""

from __future__ import annotations

import math

import torch
from torch import nn

from generation.faces.stylegan2.layers import FullyConnectedLayer, SynthesisBlock

_NOISE_MODES = ("const", "random", "none")


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z → w: normalise z, ``num_layers`` lrelu FC layers at lr_multiplier 0.01, broadcast, truncate."""

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
        embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
        lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        if c_dim != 0:
            raise ValueError(f"conditional (class-label) generators are not supported: c_dim must be 0, got {c_dim}")
        if z_dim <= 0:
            raise ValueError(f"z_dim must be positive, got {z_dim}")
        if num_layers < 1:
            raise ValueError(f"mapping num_layers must be at least 1, got {num_layers}")
        del embed_features  # only used for a label embedding, which c_dim == 0 rules out
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            # The running mean of w, learnt in training; the centre truncation pulls towards.
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        x = _normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("this generator has no w_avg, so truncation_psi must be 1")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x



class SynthesisNetwork(nn.Module):
    """ws → image: blocks b4, b8, … b{img_resolution}, channels min(channel_base // res, channel_max)."""

    def __init__(
        self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
        channel_max: int = 512, num_fp16_res: int = 0, architecture: str = "skip",
        fp16_channels_last: bool = False, **block_kwargs: object,
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two ≥ 4, got {img_resolution}")
        if architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is supported, got {architecture!r}")
        # num_fp16_res and fp16_channels_last only choose NVIDIA's half-precision blocks; we compute
        # in float32 throughout (as their code does with force_fp32), keeping conv_clamp as is.
        del num_fp16_res, fp16_channels_last
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, **block_kwargs)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        # Each torgb shares its w with the next block's conv0, so only the last torgb adds one.
        self.num_ws += 1

    def blocks(self) -> list[SynthesisBlock]:
        """The synthesis blocks, lowest resolution first."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(_NOISE_MODES)}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode)
        return img


_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KEYS = {
    "channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
    "use_noise", "activation", "kernel_size", "fp16_channels_last",
}


class Generator(nn.Module):
    """NVIDIA's stylegan2-ada-pytorch Generator: ``Generator(**init_kwargs)`` then load G_ema's state dict."""

    def __init__(
        self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 1024,
        img_channels: int = 3, mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        if c_dim != 0:
            raise ValueError(f"conditional (class-label) generators are not supported: c_dim must be 0, got {c_dim}")
        for name, given, known in (("mapping_kwargs", mapping_kwargs, _MAPPING_KEYS),
                                   ("synthesis_kwargs", synthesis_kwargs, _SYNTHESIS_KEYS)):
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"unsupported {name} option(s): {', '.join(unknown)}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        self.eval().requires_grad_(False)

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
        truncation_cutoff: int | None = None, noise_mode: str = "const",
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

