"""pix2pix edges → photo: a "unet_256" generator whose weights load from pytorch-CycleGAN-and-pix2pix checkpoints.

Our own module, laid out so that its state_dict keys are exactly those of that project's netG
(`latest_net_G.pth`): an outer `model` attribute holding nested skip blocks, each with a `.model`
Sequential whose indices (activations, convolutions, norms, the inner block) match one for one.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from storage.errors import EaselError

Norm = Literal["batch", "instance"]

SIZE = 256  # unet_256: eight stride-2 levels take 256×256 down to 1×1
LEVELS = 8
_DROPOUT_LEVELS = range(LEVELS - 3, LEVELS)  # levels 5–7: the three 8·ngf levels above the innermost one
_FIRST_CONV = "model.model.0.weight"
_EXPECTED = (
    "expected the state dict of a pytorch-CycleGAN-and-pix2pix netG (--netG unet_256) "
    "saved with torch.save(net.state_dict())"
)
_NESTED = ("state_dict", "model", "netG")
_LEVEL_PREFIX = re.compile(r"^model\.model\.(?:1\.model\.(?:3\.model\.)*)?")


class Pix2PixLoadError(EaselError):
    """A pix2pix generator file could not be loaded; the text names the file and what was expected."""


class Pix2PixInputError(EaselError):
    """The edges image handed to the generator is not one it can draw from."""


class UnetSkipBlock(nn.Module):
    """One U-Net level: down-sample, the inner levels, up-sample; all but the outermost concatenate their input."""

    def __init__(
        self, outer_nc: int, inner_nc: int, *, input_nc: int | None = None, inner: UnetSkipBlock | None = None,
        outermost: bool = False, norm: Norm = "batch", use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        # Batch norm has its own shift, so the convolutions before it carry no bias; instance norm
        # (without affine) has none, so they do. The outermost up-convolution always has one.
        bias = norm == "instance"
        down = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        if outermost:
            assert inner is not None
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers: list[nn.Module] = [down, inner, nn.ReLU(True), up, nn.Tanh()]
        elif inner is None:  # innermost: 1×1 bottleneck, no norm after its down-convolution
            up = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, _norm(norm, outer_nc)]
        else:
            up = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [
                nn.LeakyReLU(0.2, True), down, _norm(norm, inner_nc), inner,
                nn.ReLU(True), up, _norm(norm, outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The pix2pix "unet_256" generator: 8 levels, skip connections, Tanh output in [-1, 1]."""

    def __init__(
        self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: Norm = "batch", use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "instance"):
            raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")
        if ngf < 1:
            raise ValueError(f"ngf must be at least 1, got {ngf}")
        self.ngf, self.norm = ngf, norm
        # Inner width of level L (1..8) is widths[L-1]: ngf, 2ngf, 4ngf, then 8ngf; its outer width is widths[L-2].
        widths = [ngf * min(2**i, 8) for i in range(LEVELS)]
        block = UnetSkipBlock(widths[LEVELS - 2], widths[LEVELS - 1], norm=norm)
        for level in range(LEVELS - 1, 1, -1):  # levels 7..2, inside out
            block = UnetSkipBlock(
                widths[level - 2], widths[level - 1], inner=block, norm=norm,
                use_dropout=use_dropout and level in _DROPOUT_LEVELS,
            )
        self.model = UnetSkipBlock(output_nc, ngf, input_nc=input_nc, inner=block, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _norm(norm: Norm, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    # That project's instance norm: no learned scale/shift, no running statistics (so no state at all).
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def load_pix2pix(path: Path, device: str | torch.device = "cpu") -> UnetGenerator:
    """Load a `latest_net_G.pth` (unet_256, batch or instance norm) without running any code from the file."""
    path = Path(path)
    if not path.exists():
        raise Pix2PixLoadError(
            f"pix2pix model file {path} does not exist; expected the latest_net_G.pth of a "
            "pytorch-CycleGAN-and-pix2pix run (checkpoints/<name>/latest_net_G.pth)"
        )
    if not path.is_file():
        raise Pix2PixLoadError(f"pix2pix model {path} is not a file; {_EXPECTED}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise Pix2PixLoadError(
                f"{path} holds pickled Python objects, not only tensors, and easel never runs code from a model "
                f"file; {_EXPECTED}"
            ) from exc
        raise Pix2PixLoadError(f"{path} is not a readable PyTorch file ({short_reason(exc)}); {_EXPECTED}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as exc:
        raise Pix2PixLoadError(f"{path} is not a readable PyTorch file ({short_reason(exc)}); {_EXPECTED}") from exc
    state = _unwrap(loaded, path)
    ngf, norm = _infer(state, path)
    model = UnetGenerator(ngf=ngf, norm=norm)
    model.load_state_dict(_match(state, model, path), strict=True)
    return model.to(device).eval()


def draw_pix2pix(model: UnetGenerator, edges: Image.Image) -> Image.Image:
    """Draw a 256×256 RGB photo from a 256×256 edge map (dark lines on white, as in the edges2* datasets)."""
    if edges.size != (SIZE, SIZE):
        raise Pix2PixInputError(
            f"pix2pix unet_256 draws from a {SIZE}×{SIZE} image, got {edges.size[0]}×{edges.size[1]}; resize it first"
        )
    rgb = _on_white(edges)
    param = next(model.parameters())
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    x = (x / 255.0 * 2.0 - 1.0).to(device=param.device, dtype=param.dtype)  # as Normalize((0.5,)*3, (0.5,)*3)
    y = generate(model, x)[0].float().clamp(-1.0, 1.0).cpu()
    # Truncate rather than round, as that project's tensor2im does, so our pixels equal its saved results.
    pixels = ((y.permute(1, 2, 0).numpy() + 1.0) / 2.0 * 255.0).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def generate(model: UnetGenerator, x: torch.Tensor) -> torch.Tensor:
    """The generator's output for a batch of one, as pix2pix runs it at test time: batch norm with the picture's
    own statistics (the paper: "the statistics of the test batch" — with a batch of one, instance
    normalisation; the reference test.py without --eval does the same), as in training, where every batch
    was one picture; the running averages are not used. Dropout is off, so the same edges always give the
    same photo. Leaves the model in eval mode."""
    model.eval()
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:  # batch statistics, and the running ones neither used nor updated
        norm.train()
        norm.track_running_stats = False
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        for norm in norms:
            norm.eval()
            norm.track_running_stats = True


def _on_white(image: Image.Image) -> Image.Image:
    """RGB, with any transparent background made white (a drawing's paper), not black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    return image.convert("RGB")


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The flat tensor dict: as saved, or under one of the usual wrapper keys; DataParallel's prefix removed."""
    if not isinstance(loaded, Mapping):
        raise Pix2PixLoadError(f"{path} holds a {type(loaded).__name__}, not a state dict; {_EXPECTED}")
    if _FIRST_CONV not in loaded and f"module.{_FIRST_CONV}" not in loaded:
        for key in _NESTED:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise Pix2PixLoadError(
                f"{path} is not a pix2pix unet_256 generator: entry {key!r} is a {type(value).__name__}, "
                f"not a tensor; {_EXPECTED}"
            )
        state[key] = value
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _infer(state: Mapping[str, torch.Tensor], path: Path) -> tuple[int, Norm]:
    """ngf from the first convolution; batch norm from its parameters at level 2, else instance norm."""
    first = state.get(_FIRST_CONV)
    if first is None:
        raise Pix2PixLoadError(f"{path} is not a pix2pix unet_256 generator: missing {_FIRST_CONV}{_guess(state)}; "
                               f"{_EXPECTED}")
    if first.dim() != 4 or tuple(first.shape[1:]) != (3, 4, 4):
        raise Pix2PixLoadError(
            f"{path} is not a pix2pix unet_256 generator for RGB edges: {_FIRST_CONV} has shape "
            f"{_shape(first)}, expected (ngf, 3, 4, 4); {_EXPECTED}"
        )
    # Batch norm leaves weight/bias/running stats at model.model.1.model.2; instance norm (no affine) leaves
    # nothing, or only stale running stats from 2018-era checkpoints of that project.
    norm: Norm = "batch" if "model.model.1.model.2.weight" in state else "instance"
    return int(first.shape[0]), norm


def _match(state: Mapping[str, torch.Tensor], model: UnetGenerator, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors checked key by key and shape by shape against the model built for it."""
    expected = model.state_dict()
    kept: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state.items():
        if key in expected:
            kept[key] = value
        elif not _stale_instance_stat(model, key):  # dropped, as that project's own loader does
            unexpected.append(key)
    missing = [key for key in expected if key not in kept and not key.endswith(".num_batches_tracked")]
    where = f"{path} is not a pix2pix unet_256 generator (ngf={model.ngf}, {model.norm} norm)"
    if missing or unexpected:
        levels = max((_level(key) for key in state), default=0)
        parts = [] if levels == LEVELS else [f"{levels} levels, expected {LEVELS} (unet_128 has 7)"]
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise Pix2PixLoadError(f"{where}: {'; '.join(parts)}; {_EXPECTED}")
    for key, value in kept.items():
        if value.shape != expected[key].shape:
            raise Pix2PixLoadError(
                f"{where}: {key} has shape {_shape(value)}, expected {_shape(expected[key])}; {_EXPECTED}"
            )
    for key in expected:  # pre-0.4 batch norm saved no counter; it is not used in eval anyway
        kept.setdefault(key, expected[key])
    return kept


def _stale_instance_stat(model: nn.Module, key: str) -> bool:
    owner, _, name = key.rpartition(".")
    if name not in ("running_mean", "running_var", "num_batches_tracked"):
        return False
    try:
        return isinstance(model.get_submodule(owner), nn.InstanceNorm2d)
    except AttributeError:
        return False


def _level(key: str) -> int:
    match = _LEVEL_PREFIX.match(key)
    return match.group(0).count("model.") - 1 if match else 0


def _guess(state: Mapping[str, torch.Tensor]) -> str:
    """A hint when the file is another network of the same project."""
    if any(".conv_block." in key for key in state):
        return " (this looks like a resnet generator, --netG resnet_9blocks or resnet_6blocks)"
    first = state.get("model.0.weight")
    if first is not None and first.dim() == 4 and tuple(first.shape[2:]) == (4, 4):
        return " (this looks like a PatchGAN discriminator; use latest_net_G.pth, not latest_net_D.pth)"
    return ""


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{shown} and {len(keys) - 3} more" if len(keys) > 3 else shown


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def short_reason(exc: BaseException) -> str:
    """An exception as one line of at most 120 characters, to put in a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
