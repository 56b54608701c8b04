"""ESRGAN-family upscalers: tiny random-weight networks saved here in each known layout, loaded and run tiled."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from generation.engine import JobCancelled
from generation.upscale import Upscaler, UpscalerError, load_upscaler
from generation.upscale.networks import RRDBNet, SRVGGNetCompact
from storage.errors import EaselError


# ---- the original ESRGAN layout, built the way xinntao's first code nests it ----------------------


class OldDenseBlock(nn.Module):
    """conv1…conv5, each wrapped in a Sequential (conv, LeakyReLU), the last without activation."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        for k in range(1, 6):
            conv = nn.Conv2d(nf + (k - 1) * gc, gc if k < 5 else nf, 3, padding=1)
            self.add_module(f"conv{k}", nn.Sequential(conv, nn.LeakyReLU(0.2)) if k < 5 else nn.Sequential(conv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(torch.cat((x, x1), 1))
        x3 = self.conv3(torch.cat((x, x1, x2), 1))
        x4 = self.conv4(torch.cat((x, x1, x2, x3), 1))
        return self.conv5(torch.cat((x, x1, x2, x3, x4), 1)) * 0.2 + x


class OldRRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = OldDenseBlock(nf, gc), OldDenseBlock(nf, gc), OldDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class OldESRGAN(nn.Module):
    """`model.0` conv, `model.1.sub` blocks + trunk conv, then (Upsample, conv, LeakyReLU) per 2×, HR conv, last."""

    def __init__(self, nf: int = 8, nb: int = 2, gc: int = 4, upsamplings: int = 2, in_nc: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_nc, nf, 3, padding=1),
                                   Shortcut(nn.Sequential(*(OldRRDB(nf, gc) for _ in range(nb)),
                                                          nn.Conv2d(nf, nf, 3, padding=1)))]
        for _ in range(upsamplings):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(nf, 3, 3, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def into_range(last: nn.Conv2d) -> None:
    """Random ESRGAN weights give outputs near 0 with a tiny spread; centre them on grey so little is clipped."""
    with torch.no_grad():
        last.weight.mul_(6)
        last.bias.fill_(0.5)


def old_esrgan(seed: int = 0, **kwargs: int) -> OldESRGAN:
    torch.manual_seed(seed)
    network = OldESRGAN(**kwargs).eval()
    into_range(network.model[-1])
    return network


def new_esrgan(seed: int = 0, **kwargs: int) -> RRDBNet:
    torch.manual_seed(seed)
    network = RRDBNet(**{"features": 8, "blocks": 2, "growth": 4} | kwargs).eval()
    into_range(network.conv_last)
    return network


def compact(seed: int = 0, activation: str = "prelu", scale: int = 4) -> SRVGGNetCompact:
    torch.manual_seed(seed)
    network = SRVGGNetCompact(features=8, convs=3, scale=scale, activation=activation).eval()
    if activation == "prelu":  # PReLU starts at 0.25 everywhere; vary it so a misplaced weight would show
        with torch.no_grad():
            for layer in network.body[1::2]:
                layer.weight.uniform_(0.05, 0.5)
    return network


def picture(width: int, height: int, seed: int = 1, mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients with some texture: a picture-like input rather than white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(6 * x + 2 * y + k) * 0.35 + 0.5 for k in range(3)]
    pixels = np.stack(channels, -1) + rng.normal(0, 0.05, (height, width, 3))
    image = Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8), "RGB")
    return image.convert(mode)


def forward(network: nn.Module, image: Image.Image) -> np.ndarray:
    """The network run once on the whole picture, as 8-bit pixels: the reference every upscale is held to."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = network(pixels)[0].clamp(0, 1)
    return (out * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def levels(a: np.ndarray | Image.Image, b: np.ndarray | Image.Image) -> float:
    """Mean absolute difference in 8-bit levels."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def assert_not_flat(pixels: np.ndarray) -> None:
    """A comparison only means something if the output is neither clipped nor constant."""
    assert ((pixels > 0) & (pixels < 255)).mean() > 0.9
    assert pixels.std() > 5


# ---- loading each layout ------------------------------------------------------------------------


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({key: value.contiguous() for key, value in state.items()}, path)
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_original_esrgan_layout_loads_and_draws_what_that_network_draws(tmp_path: Path, suffix: str) -> None:
    network = old_esrgan()
    assert "model.1.sub.0.RDB1.conv1.0.weight" in network.state_dict()
    assert {"model.3.weight", "model.6.weight", "model.8.weight", "model.10.weight"} <= set(network.state_dict())
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / f"4x-Tiny{suffix}"))
    assert (upscaler.architecture, upscaler.scale, upscaler.name) == ("ESRGAN", 4, "4x-Tiny")
    image = picture(40, 28)
    out = upscaler.upscale(image, tile=0)
    assert out.size == (160, 112) and out.mode == "RGB"
    expected = forward(network, image)
    assert_not_flat(expected)
    assert levels(out, expected) < 0.5


@pytest.mark.parametrize(("upsamplings", "scale"), [(1, 2), (3, 8)])
def test_the_original_layout_at_other_scales(tmp_path: Path, upsamplings: int, scale: int) -> None:
    network = old_esrgan(nb=1, upsamplings=upsamplings)
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / "old.pth"))
    assert upscaler.scale == scale
    image = picture(12, 10)
    out = upscaler.upscale(image)
    assert out.size == (12 * scale, 10 * scale)
    assert levels(out, forward(network, image)) < 0.5


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_basicsr_layout_loads_with_its_hyperparameters_read_off_the_shapes(tmp_path: Path, suffix: str) -> None:
    network = new_esrgan(features=12, blocks=3, growth=6)
    assert {"conv_first.weight", "body.2.rdb3.conv5.bias", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
            "conv_hr.weight", "conv_last.weight"} <= set(network.state_dict())
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / f"RealESRGAN_x4plus{suffix}"))
    loaded = upscaler.network
    assert isinstance(loaded, RRDBNet)
    assert (loaded.conv_first.out_channels, len(loaded.body), loaded.body[0].rdb1.conv1.out_channels) == (12, 3, 6)
    assert (upscaler.architecture, upscaler.scale) == ("ESRGAN", 4)
    image = picture(24, 20)
    expected = forward(network, image)
    assert_not_flat(expected)
    assert levels(upscaler.upscale(image), expected) < 0.5


@pytest.mark.parametrize(("unshuffle", "in_channels", "scale"), [(2, 12, 2), (4, 48, 1)])
def test_basicsr_pixel_unshuffle_models_run_at_scale_2_and_1(tmp_path: Path, unshuffle: int, in_channels: int,
                                                            scale: int) -> None:
    network = new_esrgan(unshuffle=unshuffle)
    assert network.conv_first.in_channels == in_channels
    upscaler = load_upscaler(save({"params_ema": network.state_dict()}, tmp_path / f"RealESRGAN_x{scale}plus.pth"))
    assert (upscaler.scale, upscaler.multiple) == (scale, unshuffle)
    image = picture(32, 24)
    out = upscaler.upscale(image)
    assert out.size == (32 * scale, 24 * scale)
    assert levels(out, forward(network, image)) < 0.5
    # Sides that the unshuffle does not divide are padded and cropped back.
    odd = picture(33, 21)
    assert upscaler.upscale(odd).size == (33 * scale, 21 * scale)


@pytest.mark.parametrize("activation", ["prelu", "relu"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_real_esrgan_compact_loads_with_or_without_prelu(tmp_path: Path, activation: str, suffix: str) -> None:
    network = compact(activation=activation)
    keys = set(network.state_dict())
    assert ("body.1.weight" in keys) == (activation == "prelu") and "body.8.weight" in keys
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / f"realesr-general-x4v3{suffix}"))
    assert (upscaler.architecture, upscaler.scale) == ("SRVGG", 4)
    assert isinstance(upscaler.network.body[1], nn.PReLU if activation == "prelu" else nn.ReLU)
    image = picture(20, 16)
    expected = forward(network, image)
    assert_not_flat(expected)
    assert levels(upscaler.upscale(image), expected) < 0.5


def test_compact_scale_comes_from_the_last_convolution(tmp_path: Path) -> None:
    network = compact(scale=2)
    assert network.body[-1].out_channels == 12
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / "x2.pth"))
    assert upscaler.scale == 2
    assert upscaler.upscale(picture(10, 9)).size == (20, 18)


def test_wrappers_dataparallel_prefixes_and_half_precision_files_load(tmp_path: Path) -> None:
    network = new_esrgan()
    half = {f"module.{key}": value.half() for key, value in network.state_dict().items()}
    upscaler = load_upscaler(save({"state_dict": half, "iteration": torch.tensor(5)}, tmp_path / "wrapped.ckpt"))
    assert upscaler.dtype == torch.float32 and upscaler.scale == 4
    image = picture(16, 16)
    # float16 storage rounds the weights; the picture is still the same to within a level or two.
    assert levels(upscaler.upscale(image), forward(network, image)) < 2
    params = load_upscaler(save({"params": network.state_dict()}, tmp_path / "params.pt"))
    assert levels(params.upscale(image), forward(network, image)) < 0.5


# ---- tiling --------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda: old_esrgan(nb=1), lambda: new_esrgan(unshuffle=2), compact],
                         ids=["esrgan-4x", "esrgan-2x-unshuffle", "compact"])
def test_tiled_upscales_match_one_pass_over_the_whole_picture(tmp_path: Path, build) -> None:
    network = build()
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / "net.pth"))
    image = picture(70, 54, seed=3)
    whole = upscaler.upscale(image, tile=0)
    steps: list[tuple[int, int]] = []
    tiled = upscaler.upscale(image, tile=40, overlap=12, progress=lambda done, total: steps.append((done, total)))
    assert tiled.size == whole.size == (70 * upscaler.scale, 54 * upscaler.scale)
    assert len(steps) >= 4 and steps[-1] == (steps[0][1], steps[0][1])  # it really was tiled
    assert levels(whole, forward(network, image)) < 0.5
    assert levels(tiled, whole) < 1


def test_a_tile_that_covers_the_picture_is_one_pass(tmp_path: Path) -> None:
    upscaler = load_upscaler(save(compact().state_dict(), tmp_path / "net.pth"))
    steps: list[tuple[int, int]] = []
    upscaler.upscale(picture(30, 30), tile=30, overlap=8, progress=lambda *step: steps.append(step))
    assert steps == [(1, 1)]
    with pytest.raises(ValueError, match="nothing inside"):
        upscaler.upscale(picture(30, 30), tile=16, overlap=8)


def test_cancelling_between_tiles_stops_the_upscale(tmp_path: Path) -> None:
    upscaler = load_upscaler(save(compact().state_dict(), tmp_path / "net.pth"))
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(JobCancelled):
        upscaler.upscale(picture(64, 64), tile=24, overlap=4, cancelled=cancelled)
    assert len(asked) == 3


def test_transparency_and_grey_pictures_keep_their_kind(tmp_path: Path) -> None:
    upscaler = load_upscaler(save(compact(scale=2).state_dict(), tmp_path / "net.pth"))
    rgba = picture(12, 10, mode="RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((12, 10)))
    out = upscaler.upscale(rgba)
    assert out.mode == "RGBA" and out.size == (24, 20)
    assert levels(out.getchannel("A"), rgba.getchannel("A").resize((24, 20), Image.Resampling.LANCZOS)) == 0
    assert upscaler.upscale(picture(12, 10, mode="L")).mode == "RGB"


def test_an_upscaler_moves_between_dtypes(tmp_path: Path) -> None:
    network = compact()
    upscaler = load_upscaler(save(network.state_dict(), tmp_path / "net.pth"), dtype=torch.float64)
    assert isinstance(upscaler, Upscaler) and upscaler.dtype == torch.float64
    image = picture(16, 16)
    assert levels(upscaler.upscale(image), forward(network, image)) < 0.5
    assert upscaler.to("cpu", torch.float32).dtype == torch.float32


# ---- files that are not upscalers ----------------------------------------------------------------


def refusal(path: Path) -> str:
    with pytest.raises(UpscalerError) as caught:
        load_upscaler(path)
    text = str(caught.value)
    assert isinstance(caught.value, EaselError)
    assert "\n" not in text and str(path) in text, text
    return text


def test_a_text_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\nat all\n")
    assert "not a torch checkpoint" in refusal(path)


def test_a_unet_state_dict_is_not_an_upscaler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = {"conv_in.weight": torch.randn(8, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": torch.randn(8, 8, 3, 3),
            "time_embedding.linear_1.weight": torch.randn(16, 8), "conv_out.weight": torch.randn(4, 8, 3, 3)}
    for path in (save(unet, tmp_path / "unet.safetensors"), save({"state_dict": unet}, tmp_path / "unet.ckpt")):
        text = refusal(path)
        assert "is not an upscaler easel knows" in text and "ESRGAN" in text and "'conv_in.weight'" in text


def test_a_truncated_file_is_refused_in_one_line(tmp_path: Path) -> None:
    state = new_esrgan().state_dict()
    for name in ("cut.pth", "cut.safetensors"):
        whole = save(state, tmp_path / f"whole-{name}").read_bytes()
        path = tmp_path / name
        path.write_bytes(whole[: len(whole) // 2])
        refusal(path)


def test_missing_folders_empty_and_foreign_files_are_refused(tmp_path: Path) -> None:
    assert "does not exist" in refusal(tmp_path / "nowhere.pth")
    (tmp_path / "folder.pth").mkdir()
    assert "folder" in refusal(tmp_path / "folder.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert "empty" in refusal(tmp_path / "empty.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    assert ".safetensors" in refusal(tmp_path / "model.onnx")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    assert "list" in refusal(tmp_path / "list.pth")


class Payload:
    def __reduce__(self):
        return (print, ("the loader ran code from the file",))


def test_a_pickle_with_code_in_it_is_refused_unrun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as file:
        pickle.dump({"conv_first.weight": Payload()}, file, protocol=2)
    torch.save({"params_ema": Payload()}, tmp_path / "evil-zip.pth")
    for target in (path, tmp_path / "evil-zip.pth"):
        assert "Python objects" in refusal(target)
    assert "ran code" not in capsys.readouterr().out


def test_esrgan_weights_that_do_not_fit_say_which_keys(tmp_path: Path) -> None:
    state = new_esrgan().state_dict()
    del state["conv_hr.weight"]
    assert "'conv_hr.weight'" in refusal(save(state, tmp_path / "no-hr.pth"))
    old = old_esrgan(nb=1).state_dict()
    old["model.1.sub.0.RDB2.conv3.0.weight"] = torch.zeros(4, 17, 3, 3)
    text = refusal(save(old, tmp_path / "bent.pth"))
    assert "'model.1.sub.0.RDB2.conv3.0.weight' is 4×17×3×3" in text  # named as the file names it
    shuffled = compact().state_dict()
    shuffled["body.5.weight"] = shuffled.pop("body.4.weight")
    assert "looks like Real-ESRGAN compact" in refusal(save(shuffled, tmp_path / "odd.pth"))


def test_pixel_shuffle_esrgan_variants_are_named_as_unsupported(tmp_path: Path) -> None:
    state = old_esrgan(nb=1).state_dict()
    state["model.4.weight"] = state.pop("model.3.weight")  # a conv where the old layout has its LeakyReLU
    state["model.4.bias"] = state.pop("model.3.bias")
    assert "pixel-shuffle" in refusal(save(state, tmp_path / "shuffle.pth"))


def test_refusals_are_easel_errors_and_carry_no_traceback_text(tmp_path: Path) -> None:
    path = tmp_path / "weird\nname.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(UpscalerError) as caught:
        load_upscaler(path)
    assert "\n" not in str(caught.value) and "weird\\nname.pth" in str(caught.value)


def test_unshuffle_models_are_the_4x_network_run_on_the_pixel_unshuffled_picture() -> None:
    """BasicSR's scale-2 model: pixel-unshuffle by 2, then the plain 4× network with 12 input channels."""
    network = new_esrgan(unshuffle=2)
    plain = RRDBNet(in_channels=12, features=8, blocks=2, growth=4).eval()
    plain.load_state_dict(network.state_dict())
    x = torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        assert torch.allclose(network(x), plain(F.pixel_unshuffle(x, 2)), atol=1e-6)
        assert network(x).shape == (1, 3, 32, 24)
