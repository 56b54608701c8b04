"""The pix2pix unet_256 generator: reference key layout, safe loading of real-format files, drawing."""

from __future__ import annotations

import copy

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.pix2pix import (
    Pix2PixInputError,
    Pix2PixLoadError,
    UnetGenerator,
    draw_pix2pix,
    load_pix2pix,
)
from storage.errors import EaselError

# Level k (1..8) of pytorch-CycleGAN-and-pix2pix's unet_256 lives under these prefixes: the outermost block's
# Sequential is model.model; level 2 sits at its index 1; every deeper level at index 3 of the one above.
LEVEL = {1: "model.model."} | {k: "model.model.1." + "model.3." * (k - 2) + "model." for k in range(2, 9)}
INNERMOST = LEVEL[8]
assert INNERMOST == "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model."

# The 16 convolutions of a unet_256 in the reference layout, as a pruning script for that project lists them:
# eight down-convolutions outside in, then the up-convolutions inside out.
REFERENCE_CONVS = (
    ["model.model.0.weight"]
    + [f"model.model.1.{'model.3.' * i}model.1.weight" for i in range(7)]
    + [f"model.model.1.{'model.3.' * 6}model.3.weight"]
    + [f"model.model.1.{'model.3.' * i}model.5.weight" for i in range(5, -1, -1)]
    + ["model.model.3.weight"]
)
# …and its 13 norms: down-norms of levels 2–7, the innermost up-norm, up-norms of levels 7–2.
REFERENCE_NORMS = (
    [f"model.model.1.{'model.3.' * i}model.2." for i in range(6)]
    + [f"model.model.1.{'model.3.' * 6}model.4."]
    + [f"model.model.1.{'model.3.' * i}model.6." for i in range(5, -1, -1)]
)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def tiny(norm: str = "batch", seed: int = 0) -> UnetGenerator:
    """A random ngf=4 generator; batch norm running statistics randomised too, so eval mode really uses them."""
    torch.manual_seed(seed)
    g = UnetGenerator(ngf=4, norm=norm)
    with torch.no_grad():
        for module in g.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return g.eval()


def edges() -> Image.Image:
    """Thin dark lines on white, as in edges2shoes."""
    image = Image.new("RGB", (256, 256), "white")
    pen = ImageDraw.Draw(image)
    pen.ellipse((40, 60, 210, 200), outline="black", width=2)
    pen.line((30, 220, 230, 30), fill="black", width=1)
    return image


def raw(g: UnetGenerator, image: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    with torch.inference_mode():
        return g.eval()(x)


def save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


# --- layout ----------------------------------------------------------------------------------------------------


def test_batch_norm_keys_are_exactly_the_reference_layout() -> None:
    keys = set(UnetGenerator(ngf=4, norm="batch").state_dict())
    expected = set(REFERENCE_CONVS) | {n + s for n in REFERENCE_NORMS for s in BN} | {"model.model.3.bias"}
    assert keys == expected
    assert len(keys) == 82


def test_a_handful_of_exact_keys_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in UnetGenerator(ngf=4, norm="batch").state_dict().items()}
    assert shapes["model.model.0.weight"] == (4, 3, 4, 4)  # first conv: RGB → ngf, no norm, no bias
    assert "model.model.0.bias" not in shapes
    assert shapes["model.model.1.model.1.weight"] == (8, 4, 4, 4)  # level 2 down-conv
    assert shapes["model.model.1.model.2.running_mean"] == (8,)  # level 2 down-norm
    assert shapes["model.model.1.model.5.weight"] == (16, 4, 4, 4)  # level 2 up-conv: (in = 2·inner, out)
    assert shapes["model.model.1.model.6.weight"] == (4,)
    assert shapes["model.model.1.model.3.model.1.weight"] == (16, 8, 4, 4)  # level 3
    assert shapes["model.model.1.model.3.model.3.model.1.weight"] == (32, 16, 4, 4)  # level 4 reaches 8·ngf
    assert shapes[INNERMOST + "1.weight"] == (32, 32, 4, 4)  # innermost down-conv, no norm after it
    assert INNERMOST + "2.weight" not in shapes
    assert shapes[INNERMOST + "3.weight"] == (32, 32, 4, 4)  # innermost up-conv takes no concatenation
    assert shapes[INNERMOST + "4.running_var"] == (32,)
    assert shapes["model.model.3.weight"] == (8, 3, 4, 4)  # outermost up-conv: 2·ngf → RGB, with bias
    assert shapes["model.model.3.bias"] == (3,)


def test_instance_norm_has_biases_and_no_norm_state() -> None:
    keys = set(UnetGenerator(ngf=4, norm="instance").state_dict())
    assert keys == set(REFERENCE_CONVS) | {k.replace(".weight", ".bias") for k in REFERENCE_CONVS}
    assert "model.model.0.bias" in keys and "model.model.1.model.1.bias" in keys
    assert len(keys) == 32


def test_full_size_parameter_count_matches_the_reference() -> None:
    # That project prints "[Network G] Total number of parameters : 54.414 M" for pix2pix's default netG.
    with torch.device("meta"):
        batch = UnetGenerator(ngf=64, norm="batch")
    assert round(sum(p.numel() for p in batch.parameters()) / 1e6, 3) == 54.414


def test_dropout_sits_in_the_three_levels_above_the_innermost() -> None:
    g = UnetGenerator(ngf=4, use_dropout=True)
    found = {name for name, m in g.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert found == {LEVEL[k] + "7" for k in (5, 6, 7)}
    assert set(g.state_dict()) == set(UnetGenerator(ngf=4).state_dict())  # dropout adds no keys


def test_forward_shape_and_range() -> None:
    out = raw(tiny(), edges())
    assert out.shape == (1, 3, 256, 256)
    assert out.abs().max() <= 1.0


# --- loading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_saved_state_dict_loads_back_identically(tmp_path: Path, norm: str) -> None:
    g = tiny(norm)
    path = save(g.state_dict(), tmp_path / "latest_net_G.pth")
    loaded = load_pix2pix(path)
    assert (loaded.ngf, loaded.norm, loaded.training) == (4, norm, False)
    assert torch.equal(raw(loaded, edges()), raw(g, edges()))
    assert np.array_equal(np.asarray(draw_pix2pix(loaded, edges())), np.asarray(draw_pix2pix(g, edges())))


def test_eval_mode_uses_the_running_statistics(tmp_path: Path) -> None:
    g = tiny("batch")
    loaded = load_pix2pix(save(g.state_dict(), tmp_path / "g.pth"))
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        name = f"model.model.1.model.2.{key}"
        assert torch.equal(loaded.state_dict()[name], g.state_dict()[name])
    with torch.inference_mode():
        per_image = g.train()(torch.zeros(1, 3, 256, 256) + 0.3)  # batch statistics of this one image
    assert not torch.allclose(per_image, raw(loaded, Image.new("RGB", (256, 256), (166, 166, 166))), atol=1e-3)


def test_data_parallel_prefix_is_stripped(tmp_path: Path) -> None:
    g = tiny("batch")
    prefixed = {f"module.{k}": v for k, v in g.state_dict().items()}
    loaded = load_pix2pix(save(prefixed, tmp_path / "dp.pth"))
    assert torch.equal(raw(loaded, edges()), raw(g, edges()))


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "netG"])
def test_nested_state_dict_loads(tmp_path: Path, wrapper: str) -> None:
    g = tiny("instance")
    loaded = load_pix2pix(save({wrapper: g.state_dict(), "epoch": torch.tensor(200)}, tmp_path / "nested.pth"))
    assert torch.equal(raw(loaded, edges()), raw(g, edges()))


def test_stale_instance_norm_statistics_are_dropped(tmp_path: Path) -> None:
    # Checkpoints from the 2018 versions of that project kept running stats on instance norms; its loader drops them.
    g = tiny("instance")
    state = dict(g.state_dict())
    for prefix in REFERENCE_NORMS:
        state[prefix + "running_mean"] = torch.zeros(1)
        state[prefix + "running_var"] = torch.ones(1)
        state[prefix + "num_batches_tracked"] = torch.tensor(3)
    loaded = load_pix2pix(save(state, tmp_path / "old.pth"))
    assert loaded.norm == "instance"
    assert torch.equal(raw(loaded, edges()), raw(g, edges()))


def test_batch_norm_without_counters_loads(tmp_path: Path) -> None:
    g = tiny("batch")
    state = {k: v for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert torch.equal(raw(load_pix2pix(save(state, tmp_path / "pre04.pth")), edges()), raw(g, edges()))


class Payload:
    """Would create a file if unpickled with code execution allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = save({"model.model.0.weight": torch.zeros(4, 3, 4, 4), "x": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(Pix2PixLoadError, match="evil.pth") as caught:
        load_pix2pix(path)
    assert "never runs code" in str(caught.value)
    assert not marker.exists()
    assert isinstance(caught.value, EaselError)


def test_a_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = save(tiny(), tmp_path / "whole_net.pth")  # torch.save(net) instead of net.state_dict()
    with pytest.raises(Pix2PixLoadError, match="whole_net.pth.*state_dict"):
        load_pix2pix(path)


def test_another_networks_state_dict_is_refused(tmp_path: Path) -> None:
    path = save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "linear.pth")
    expected = r"linear\.pth is not a pix2pix unet_256 generator: missing model\.model\.0\.weight"
    with pytest.raises(Pix2PixLoadError, match=expected):
        load_pix2pix(path)


def test_a_discriminator_gets_a_hint(tmp_path: Path) -> None:
    d = torch.nn.Sequential(torch.nn.Conv2d(6, 4, 4, 2, 1), torch.nn.LeakyReLU(0.2))
    path = save({f"model.{k}": v for k, v in d.state_dict().items()}, tmp_path / "latest_net_D.pth")
    with pytest.raises(Pix2PixLoadError, match="latest_net_D.pth.*discriminator"):
        load_pix2pix(path)


def test_wrong_shape_names_the_key(tmp_path: Path) -> None:
    state = dict(tiny().state_dict())
    state["model.model.1.model.3.model.1.weight"] = torch.zeros(16, 8, 3, 3)
    key = re.escape("model.model.1.model.3.model.1.weight")
    expected = rf"shaky\.pth.*{key} has shape \(16, 8, 3, 3\), expected \(16, 8, 4, 4\)"
    with pytest.raises(Pix2PixLoadError, match=expected):
        load_pix2pix(save(state, tmp_path / "shaky.pth"))


def test_missing_level_is_reported(tmp_path: Path) -> None:
    state = {k: v for k, v in tiny().state_dict().items() if not k.startswith(INNERMOST)}
    with pytest.raises(Pix2PixLoadError, match=r"short\.pth.*: 7 levels, expected 8.*missing "):
        load_pix2pix(save(state, tmp_path / "short.pth"))


def test_grayscale_model_is_refused(tmp_path: Path) -> None:
    state = dict(UnetGenerator(input_nc=1, ngf=4).state_dict())
    with pytest.raises(Pix2PixLoadError, match=r"grey\.pth.*RGB.*\(4, 1, 4, 4\)"):
        load_pix2pix(save(state, tmp_path / "grey.pth"))


def test_truncated_file(tmp_path: Path) -> None:
    whole = io.BytesIO()
    torch.save(tiny().state_dict(), whole)
    path = tmp_path / "cut.pth"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(Pix2PixLoadError, match=r"cut\.pth is not a readable PyTorch file"):
        load_pix2pix(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(Pix2PixLoadError, match=r"nowhere\.pth does not exist"):
        load_pix2pix(tmp_path / "nowhere.pth")


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(Pix2PixLoadError, match="is not a file"):
        load_pix2pix(tmp_path)


@pytest.mark.parametrize(
    "obj", [torch.zeros(3), [1, 2], {"model.model.0.weight": 1.0}], ids=["tensor", "list", "float-entry"],
)
def test_not_a_state_dict(tmp_path: Path, obj: object) -> None:
    with pytest.raises(Pix2PixLoadError, match=r"odd\.pth"):
        load_pix2pix(save(obj, tmp_path / "odd.pth"))


def test_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file\n\nat all")
    with pytest.raises(Pix2PixLoadError) as caught:
        load_pix2pix(tmp_path / "junk.pth")
    assert "\n" not in str(caught.value)


# --- drawing ---------------------------------------------------------------------------------------------------


def test_draw_gives_256_rgb() -> None:
    out = draw_pix2pix(tiny(), edges())
    assert (out.size, out.mode) == ((256, 256), "RGB")


def test_draw_is_deterministic_even_with_dropout() -> None:
    torch.manual_seed(1)
    g = UnetGenerator(ngf=4, use_dropout=True).train()
    first, second = draw_pix2pix(g, edges()), draw_pix2pix(g, edges())
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not g.training


def test_grey_and_transparent_input_are_drawn_like_rgb() -> None:
    g, rgb = tiny(), edges()
    expected = np.asarray(draw_pix2pix(g, rgb))
    assert np.array_equal(np.asarray(draw_pix2pix(g, rgb.convert("L"))), expected)
    transparent = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    transparent.paste(rgb.convert("RGBA"), mask=Image.eval(rgb.convert("L"), lambda v: 255 - v))
    assert np.array_equal(np.asarray(draw_pix2pix(g, transparent)), expected)


def test_draw_matches_the_reference_test_script_and_its_pixel_mapping() -> None:
    g = tiny()
    x = torch.from_numpy(np.asarray(edges(), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    with torch.no_grad():  # the reference test.py without --eval: batch norm with this picture's statistics
        y = copy.deepcopy(g).train()(x)[0]
    expected = ((y.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)  # that project's tensor2im
    assert np.array_equal(np.asarray(draw_pix2pix(g, edges())), expected)
    # Not the running averages: those are for batches of many pictures, and pix2pix trains on batches of one.
    running = ((raw(g, edges())[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)
    assert np.abs(running.astype(int) - expected.astype(int)).max() > 8
    state = {key: value.clone() for key, value in g.state_dict().items()}
    draw_pix2pix(g, edges())
    assert all(torch.equal(state[key], value) for key, value in g.state_dict().items())  # nothing updated


def test_wrong_size_is_refused() -> None:
    with pytest.raises(Pix2PixInputError, match="256×256 image, got 512×384"):
        draw_pix2pix(tiny(), Image.new("RGB", (512, 384), "white"))
