"""What the face engine does with a generator: seeds to latents, style mixing, edits along directions, pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from generation.faces.stylegan2.networks import Generator


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
