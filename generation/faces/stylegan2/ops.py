"""StyleGAN2's elementwise and resampling primitives: bias + activation, FIR up-sampling, modulated convolution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# name -> (function, default gain); the gains are NVIDIA's bias_act "def_gain" values.
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
}


def activation_of(name: str) -> tuple:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]



def bias_act(
    x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by gain, clamp to ±clamp."""
    func, default_gain = activation_of(act)
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

