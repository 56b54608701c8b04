"""Our StyleGAN2 generator: NVIDIA's parameter names, its maths on a tiny random model, and the face tools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from generation.faces.stylegan2 import (
    Generator,
    edit,
    mix,
    modulated_conv2d,
    sefa_directions,
    setup_filter,
    style_bands,
    to_uint8,
    upsample2d,
    z_for_seed,
)

TINY = dict(
    z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=4, conv_clamp=256),
)


def tiny_generator(seed: int = 0) -> Generator:
    """The tiny config with every tensor random, noise and w_avg included, so each of them matters."""
    torch.manual_seed(seed)
    G = Generator(**TINY)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith("resample_filter"):
                continue
            if name.endswith("noise_strength"):
                t.copy_(torch.rand([]) * 0.5 + 0.1)
            elif name.endswith("affine.bias"):
                t.copy_(1 + 0.1 * torch.randn_like(t))
            else:
                t.copy_(torch.randn_like(t) * (0.1 if name.endswith("bias") else 1.0))
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


# The G_ema state-dict keys NVIDIA's training/networks.py gives this config: blocks b4..b32, a
# resample_filter buffer in every block and SynthesisLayer, noise_const/noise_strength per conv,
# an 'affine' FullyConnectedLayer in every conv and torgb, 'const' only in b4 (which has no conv0),
# mapping fc0..fc{num_layers-1} plus the w_avg buffer.
_LAYER = ["weight", "noise_strength", "bias", "resample_filter", "noise_const", "affine.weight", "affine.bias"]
_TORGB = ["weight", "bias", "affine.weight", "affine.bias"]
NVIDIA_KEYS = (
    ["synthesis.b4.const", "synthesis.b4.resample_filter"]
    + [f"synthesis.b4.conv1.{k}" for k in _LAYER]
    + [f"synthesis.b4.torgb.{k}" for k in _TORGB]
    + [
        key
        for res in (8, 16, 32)
        for key in (
            [f"synthesis.b{res}.resample_filter"]
            + [f"synthesis.b{res}.conv0.{k}" for k in _LAYER]
            + [f"synthesis.b{res}.conv1.{k}" for k in _LAYER]
            + [f"synthesis.b{res}.torgb.{k}" for k in _TORGB]
        )
    ]
    + ["mapping.w_avg", "mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight", "mapping.fc1.bias"]
)


def test_state_dict_keys_match_nvidia(G: Generator) -> None:
    sd = G.state_dict()
    assert sorted(sd) == sorted(NVIDIA_KEYS)
    # Shapes NVIDIA's code gives: channels min(256 // res, 32) = 32, 32, 16, 8.
    assert sd["synthesis.b4.const"].shape == (32, 4, 4)
    assert sd["synthesis.b8.conv0.weight"].shape == (32, 32, 3, 3)
    assert sd["synthesis.b32.conv0.weight"].shape == (8, 16, 3, 3)
    assert sd["synthesis.b32.conv0.noise_const"].shape == (32, 32)
    assert sd["synthesis.b16.torgb.weight"].shape == (3, 16, 1, 1)
    assert sd["synthesis.b16.conv0.affine.weight"].shape == (32, 16)  # styles for the 32 input channels
    assert sd["synthesis.b4.conv1.noise_strength"].shape == ()
    assert torch.equal(sd["synthesis.b8.resample_filter"], torch.outer(*[torch.tensor([1.0, 3, 3, 1])] * 2) / 64)
    # A state dict read from elsewhere loads strictly into a fresh instance, and gives the same image.
    fresh = Generator(**TINY)
    fresh.load_state_dict(sd, strict=True)
    z = z_for_seed(3, 16)
    assert torch.equal(fresh(z), G(z))


def test_num_ws_counts_one_w_per_conv_plus_the_last_torgb() -> None:
    assert Generator(**TINY).num_ws == 8
    big = Generator(z_dim=8, w_dim=8, img_resolution=1024,
                    synthesis_kwargs=dict(channel_base=2048, channel_max=4), mapping_kwargs=dict(num_layers=1))
    assert big.num_ws == 18


def test_unsupported_options_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="'skip'"):
        Generator(**{**TINY, "synthesis_kwargs": {**TINY["synthesis_kwargs"], "architecture": "resnet"}})
    with pytest.raises(ValueError, match="c_dim"):
        Generator(**{**TINY, "c_dim": 10})
    with pytest.raises(ValueError, match="bogus"):
        Generator(**{**TINY, "mapping_kwargs": {"num_layers": 2, "bogus": 1}})


def test_image_shape_range_and_determinism(G: Generator) -> None:
    z = z_for_seed(42, 16)
    assert z.dtype == torch.float32 and z.shape == (1, 16)
    assert torch.equal(z, torch.from_numpy(np.random.RandomState(42).randn(1, 16)).float())
    ws = G.mapping(z)
    assert ws.shape == (1, G.num_ws, 16)
    img = G.synthesis(ws)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    again = G.synthesis(G.mapping(z_for_seed(42, 16)))
    assert torch.equal(img, again)
    pixels = to_uint8(img)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    expected = (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    assert np.array_equal(pixels, expected)
    assert not torch.equal(img, G.synthesis(G.mapping(z_for_seed(43, 16))))


def test_noise_modes(G: Generator) -> None:
    ws = G.mapping(z_for_seed(1, 16))
    const, none = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(const, none)
    torch.manual_seed(0)
    a = G.synthesis(ws, noise_mode="random")
    torch.manual_seed(0)
    b = G.synthesis(ws, noise_mode="random")
    assert torch.equal(a, b) and not torch.allclose(a, const)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="loud")


def test_truncation(G: Generator) -> None:
    avg = G.mapping.w_avg
    images = [G.synthesis(G.mapping(z_for_seed(s, 16), truncation_psi=0)) for s in (1, 2, 3)]
    assert torch.allclose(images[0], images[1], atol=1e-6) and torch.allclose(images[0], images[2], atol=1e-6)
    assert torch.allclose(images[0], G.synthesis(avg.expand(1, G.num_ws, 16)), atol=1e-6)
    z = z_for_seed(5, 16)
    full, half = G.mapping(z), G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, avg + 0.5 * (full - avg), atol=1e-6)
    cut = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], half[:, :3]) and torch.equal(cut[:, 3:], full[:, 3:])


def test_mixing_and_bands(G: Generator) -> None:
    a, b = G.mapping(z_for_seed(1, 16)), G.mapping(z_for_seed(2, 16))
    everything = mix(a, b, range(G.num_ws))
    assert torch.equal(everything, b)
    assert torch.equal(G.synthesis(everything), G.synthesis(b))
    coarse = mix(a, b, style_bands(G.num_ws)["coarse"])
    assert torch.equal(coarse[:, :3], b[:, :3]) and torch.equal(coarse[:, 3:], a[:, 3:])
    assert style_bands(18) == {"coarse": range(0, 4), "middle": range(4, 8), "fine": range(8, 18)}
    assert style_bands(8) == {"coarse": range(0, 3), "middle": range(3, 6), "fine": range(6, 8)}
    with pytest.raises(ValueError, match="0–7"):
        mix(a, b, [8])


def test_sefa_directions_and_edit(G: Generator) -> None:
    dirs = sefa_directions(G, count=5)
    assert dirs.shape == (5, 16)
    assert np.allclose(np.linalg.norm(dirs, axis=1), 1, atol=1e-5)
    assert np.allclose(dirs @ dirs.T, np.eye(5), atol=1e-5)  # eigenvectors of a symmetric matrix
    assert np.array_equal(dirs, sefa_directions(G, count=5))
    assert all(d[np.abs(d).argmax()] > 0 for d in dirs)
    ws = G.mapping(z_for_seed(7, 16))
    assert torch.equal(edit(ws, dirs[0], 0.0), ws)
    moved = edit(ws, dirs[0] * 3, 2.0, layers=range(0, 4))
    assert torch.allclose(moved[:, :4] - ws[:, :4], 2.0 * torch.from_numpy(dirs[0]).expand(1, 4, 16), atol=1e-6)
    assert torch.equal(moved[:, 4:], ws[:, 4:])


# --- The resampling numerics, checked against scipy's plain 2-D convolution. -----------------------

_F4 = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def _zero_insert(x: np.ndarray) -> np.ndarray:
    """Each pixel followed by a zero on both axes, as upfirdn2d's up=2 does: [H, W] → [2H, 2W]."""
    z = np.zeros((x.shape[0] * 2, x.shape[1] * 2))
    z[::2, ::2] = x
    return z


def test_image_upsampling_matches_zero_insertion_and_nvidia_padding() -> None:
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    ours = upsample2d(x, setup_filter([1, 3, 3, 1]).double())
    assert ours.shape == (2, 3, 10, 14)
    for n in range(2):
        for c in range(3):
            full = convolve2d(_zero_insert(x[n, c].numpy()), _F4 * 4, mode="full")  # [2H+3, 2W+3]
            # upsample2d pads (before, after) = ((4+2-1)//2, (4-2)//2) = (2, 1); a 'valid' 4-tap filter
            # over that is the full convolution starting at 4 - 1 - 2 = 1.
            ref = full[1 : 1 + 10, 1 : 1 + 14]
            assert np.allclose(ours[n, c].numpy(), ref, atol=1e-12)


def test_upsampling_conv_matches_zero_insertion_and_nvidia_padding() -> None:
    torch.manual_seed(0)
    n_batch, cin, cout, h, w = 2, 2, 3, 4, 6
    x = torch.randn(n_batch, cin, h, w, dtype=torch.float64)
    weight = torch.randn(cout, cin, 3, 3, dtype=torch.float64)
    styles = torch.rand(n_batch, cin, dtype=torch.float64) + 0.5
    ours = modulated_conv2d(x, weight, styles, demodulate=False, up=2,
                            resample_filter=setup_filter([1, 3, 3, 1]).double(), padding=1)
    assert ours.shape == (n_batch, cout, 2 * h, 2 * w)
    for n in range(n_batch):
        for o in range(cout):
            # Transposed conv = zero insertion then a full *convolution* with the unflipped weight
            # (NVIDIA's flip_weight=False for up=2); then the FIR filter with gain 4 and padding
            # (1, 1) = conv2d_resample's 1 + (4+2-1)//2 - (3-1) and 1 + (4-2)//2 - (3-2). The
            # transposed conv gives 2H+1 rows; the padded 'valid' filter starts at 4 - 1 - 1 = 2 of
            # the full convolution.
            acc = sum(
                styles[n, i].item()
                * convolve2d(_zero_insert(x[n, i].numpy())[:-1, :-1], weight[o, i].numpy(), mode="full")
                for i in range(cin)
            )
            ref = convolve2d(acc, _F4 * 4, mode="full")[2 : 2 + 2 * h, 2 : 2 + 2 * w]
            assert np.allclose(ours[n, o].numpy(), ref, atol=1e-10)


def test_modulated_conv_demodulates_each_output_channel() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(2, 4, dtype=torch.float64)
    ours = modulated_conv2d(x, weight, styles, demodulate=True, padding=1)
    for n in range(2):
        w = weight * styles[n].reshape(1, 4, 1, 1)
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[n : n + 1], w, padding=1)
        assert torch.allclose(ours[n : n + 1], ref, atol=1e-10)
