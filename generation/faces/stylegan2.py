"""StyleGAN2 generator in plain PyTorch, parameter-for-parameter compatible with NVIDIA's stylegan2-ada-pytorch.

Our own code, written from the published architecture. Module and tensor names follow NVIDIA's
``training/networks.py`` so that the ``G_ema`` state dict of their ``.pkl`` loads with
``load_state_dict(strict=True)``, and ``Generator(**init_kwargs)`` accepts the constructor
arguments stored in those pickles. Everything runs in float32 with ordinary torch ops (no custom
CUDA/C++), which is what NVIDIA's code computes on CPU with ``force_fp32``; their fp16 blocks
change nothing but rounding. Only the 'skip' synthesis architecture (every published FFHQ model)
and unconditional models (``c_dim == 0``) are supported; other options raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "edit",
    "mix",
    "sefa_directions",
    "style_bands",
    "to_uint8",
    "z_for_seed",
]

# name -> (function, default gain); the gains are NVIDIA's bias_act "def_gain" values.
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
}
_NOISE_MODES = ("const", "random", "none")


def _activation(name: str) -> tuple:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


# --------------------------------------------------------------------------------------------------
# Elementwise and resampling primitives.


def _bias_act(
    x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by gain, clamp to ±clamp."""
    func, default_gain = _activation(act)
    gain = default_gain if gain is None else float(gain)
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    x = func(x)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The stored low-pass filter: outer product of 1-D taps (or a given 2-D filter), summing to 1.

    Shape rules match NVIDIA's ``setup_filter`` so the ``resample_filter`` buffers load: 1-D taps
    stay 1-D (separable) only when there are 8 or more of them.
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"resample filter must be 1-D taps or a 2-D kernel, got shape {list(f.shape)}")
    return f / f.sum()


def _filter_2d(f: torch.Tensor) -> torch.Tensor:
    return torch.outer(f, f) if f.ndim == 1 else f


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Insert ``up - 1`` zeros after every pixel, pad (x0, x1, y0, y1; negative crops), convolve with f·gain.

    The same sequence as scipy.signal.upfirdn / NVIDIA's upfirdn2d (without downsampling); the
    filter is a true convolution (flipped), which only matters for asymmetric filters.
    """
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros([n, c, h * up, w * up])
        z[:, :, ::up, ::up] = x
        x = z
    px0, px1, py0, py1 = pad
    x = F.pad(x, [px0, px1, py0, py1])
    k = (_filter_2d(f) * gain).to(x.dtype).flip([0, 1])
    k = k[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by ``up`` with the FIR filter, output exactly ``up`` times the input size.

    Padding (NVIDIA's upsample2d): before = (fw + up - 1) // 2, after = (fw - up) // 2; for the
    4-tap filter and up=2 that is (2, 1) on each axis. Gain up**2 keeps the mean brightness,
    since only one in up**2 pixels is non-zero after zero insertion.
    """
    fh, fw = _filter_2d(f).shape
    pad = ((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2)
    return upfirdn2d(x, f, up=up, pad=pad, gain=up * up)


def _upsample_conv_padding(kh: int, kw: int, fh: int, fw: int, up: int, padding: int) -> tuple[int, int, int, int]:
    """FIR padding after a stride-``up`` transposed conv, as NVIDIA's conv2d_resample derives it.

    Start from the conv's own padding plus upsample2d's split, then subtract what the transposed
    convolution already grew: ``kw - 1`` before and ``kw - up`` after. For a 3×3 conv (padding 1),
    a 4×4 filter and up=2: (1 + 2 - 2, 1 + 1 - 1) = (1, 1) on each axis.
    """
    px0 = padding + (fw + up - 1) // 2 - (kw - 1)
    px1 = padding + (fw - up) // 2 - (kw - up)
    py0 = padding + (fh + up - 1) // 2 - (kh - 1)
    py1 = padding + (fh - up) // 2 - (kh - up)
    return px0, px1, py0, py1


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True, up: int = 1,
    resample_filter: torch.Tensor | None = None, padding: int = 0,
) -> torch.Tensor:
    """Per-sample modulated (and optionally demodulated) convolution, run as one grouped conv.

    Weights are scaled by the styles over input channels; demodulation divides each output
    channel by sqrt(sum w² + 1e-8). This is NVIDIA's fused_modconv path, the one their generator
    takes in eval mode in float32. With ``up > 1`` the conv is a stride-2 transposed convolution
    with the weight used unflipped (a true convolution, as NVIDIA's flip_weight=False means),
    followed by the FIR filter.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = weight[None] * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
        w = w * dcoefs.reshape(n, out_ch, 1, 1, 1)
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(n * out_ch, in_ch, kh, kw), padding=padding, groups=n)
    else:
        if resample_filter is None:
            raise ValueError("upsampling convolution needs a resample filter")
        # conv_transpose2d wants [in, out/groups, kh, kw] per group.
        wt = w.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=n)
        fh, fw = _filter_2d(resample_filter).shape
        pad = _upsample_conv_padding(kh, kw, fh, fw, up, padding)
        x = upfirdn2d(x, resample_filter, pad=pad, gain=up * up)
    return x.reshape(n, out_ch, *x.shape[2:])


# --------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: weight·lr/sqrt(in), bias·lr, then activation."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
        lr_multiplier: float = 1.0, bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        _activation(activation)
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
        return _bias_act(x.matmul(w.t()), b, act=self.activation)


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


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally ×2 upsampling), per-pixel noise, bias, lrelu·sqrt(2), clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
        up: int = 1, use_noise: bool = True, activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        _activation(activation)
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = _ACTIVATIONS[activation][1]
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
        return _bias_act(x, self.bias, act=self.activation, gain=self.act_gain, clamp=self.conv_clamp)


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
        return _bias_act(x, self.bias, clamp=self.conv_clamp)


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


# --------------------------------------------------------------------------------------------------
# What the face engine does with a generator.


def z_for_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The latent NVIDIA's generate.py draws for a seed: RandomState(seed).randn(1, z_dim), as float32."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """One generated image ([1, C, H, W] or [C, H, W], range −1..1) as an H×W×C uint8 array."""
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.ndim != 3:
        raise ValueError(f"image must have shape [C, H, W], got {list(img.shape)}")
    return (img.permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


def style_bands(num_ws: int) -> dict[str, range]:
    """Named ws ranges for style mixing: coarse, middle and fine.

    For 64 px and up these are the StyleGAN paper's bands, ws 0–3 (4²–8²: pose, face shape),
    4–7 (16²–32²: features, hair style, eyes) and 8–end (colour, fine detail) — for a 1024 px
    model with 18 ws, coarse 0–3, middle 4–7, fine 8–17. Below 64 px (fewer than 10 ws) the fine
    band would be empty, so the ws are cut into three near-equal consecutive bands instead.
    (NVIDIA's style_mixing.py itself defaults to copying ws 0–6 from the column seed.)
    """
    if num_ws >= 10:
        a, b = 4, 8
    else:
        a = math.ceil(num_ws / 3)
        b = a + math.ceil((num_ws - a) / 2)
    return {"coarse": range(0, a), "middle": range(a, b), "fine": range(b, num_ws)}


def mix(ws_a: torch.Tensor, ws_b: torch.Tensor, layers: range | Sequence[int]) -> torch.Tensor:
    """ws_a with the given layers taken from ws_b (style_mixing.py: row seed's w, column seed's styles)."""
    if ws_a.shape != ws_b.shape or ws_a.ndim != 3:
        raise ValueError(
            f"ws to mix must share one [N, num_ws, w_dim] shape, got {list(ws_a.shape)} and {list(ws_b.shape)}")
    idx = list(layers)
    num_ws = ws_a.shape[1]
    bad = [i for i in idx if not 0 <= i < num_ws]
    if bad:
        raise ValueError(f"style layers must be 0–{num_ws - 1}, got {bad}")
    out = ws_a.clone()
    out[:, idx] = ws_b[:, idx]
    return out


def sefa_directions(G: Generator, count: int = 5) -> np.ndarray:
    """Closed-form semantic directions in W (SeFa, Shen & Zhou 2021), strongest first, as unit rows.

    A stacks the style (affine) weights of every synthesis conv layer — the maps from w to the
    per-channel modulation, as in SeFa and the widely used closed_form_factorization scripts;
    torgb affines are left out. As in SeFa's own code, each column of the stacked [w_dim, channels]
    matrix is normalised to unit length. The directions are the top eigenvectors of AᵀA
    ([w_dim, w_dim], eigh on a symmetric matrix, sorted by eigenvalue); the sign is fixed so each
    vector's largest-magnitude component is positive.
    """
    if not 1 <= count <= G.w_dim:
        raise ValueError(f"count must be 1–{G.w_dim}, got {count}")
    weights = []
    for block in G.synthesis.blocks():
        for name in ("conv0", "conv1"):
            layer = getattr(block, name, None)
            if layer is not None:
                weights.append(layer.affine.weight.detach().to(torch.float64).cpu().numpy().T)
    a = np.concatenate(weights, axis=1)  # [w_dim, total channels]
    a = a / np.linalg.norm(a, axis=0, keepdims=True)
    values, vectors = np.linalg.eigh(a @ a.T)
    order = np.argsort(values)[::-1][:count]
    dirs = vectors[:, order].T
    signs = np.sign(dirs[np.arange(count), np.abs(dirs).argmax(axis=1)])
    dirs = dirs * signs[:, None]
    return (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)


def edit(
    ws: torch.Tensor, direction: np.ndarray | torch.Tensor, amount: float,
    layers: range | Sequence[int] | None = None,
) -> torch.Tensor:
    """ws moved ``amount`` along the unit ``direction`` in the given layers (all by default)."""
    d = torch.as_tensor(direction).to(device=ws.device, dtype=ws.dtype).reshape(-1)
    if ws.ndim != 3 or d.shape[0] != ws.shape[2]:
        raise ValueError(
            f"direction must have {ws.shape[-1]} components for ws of shape {list(ws.shape)}, got {d.shape[0]}")
    norm = d.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("direction must be a non-zero, finite vector")
    idx = list(range(ws.shape[1])) if layers is None else list(layers)
    bad = [i for i in idx if not 0 <= i < ws.shape[1]]
    if bad:
        raise ValueError(f"style layers must be 0–{ws.shape[1] - 1}, got {bad}")
    out = ws.clone()
    out[:, idx] = out[:, idx] + amount * d / norm
    return out
