"""Reading an upscaler's weights file and working out which network it is from its keys and shapes alone.

Known layouts (nothing in the file is ever run: torch files load with `weights_only=True`):
- ESRGAN, BasicSR's layout (RealESRGAN_x4plus…): `conv_first`, `body.N.rdb1.conv1`, `conv_body`,
  `conv_up1…`, `conv_hr`, `conv_last`; `conv_first` seeing 4× or 16× the image's channels means the
  input is pixel-unshuffled by 2 or 4 (BasicSR's scale-2 and scale-1 models).
- ESRGAN, the original layout (4x-UltraSharp…): `model.0` first conv, `model.1.sub.N.RDB1.conv1.0`
  blocks, `model.1.sub.<blocks>` trunk conv, upsampling convs at `model.3`, `model.6`, …, then the
  HR conv and the last conv two apart. Renamed to BasicSR's names, so one network runs both.
- Real-ESRGAN compact (realesr-general-x4v3…): `body.K` convs at even K, PReLU weights (1-D) at odd
  K or no weights at all (ReLU); the last conv's output is channels × scale².
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from generation.upscale.networks import RRDBNet, SRVGGNetCompact
from generation.upscale.upscaler import Upscaler
from storage.errors import EaselError

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
_EXPECTED = "expected ESRGAN/RRDBNet or Real-ESRGAN compact SRVGG weights"
_WRAPPERS = ("params_ema", "params", "state_dict", "model")  # BasicSR saves the EMA weights as params_ema
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80

_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)")
_OLD_CONV = re.compile(r"model\.(\d+)\.(weight|bias)")
_OLD_TRUNK = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)")
_NEW_BLOCK = re.compile(r"body\.(\d+)\.rdb[123]\.conv[1-5]\.(weight|bias)")
_NEW_UP = re.compile(r"conv_up(\d+)\.weight")
_COMPACT = re.compile(r"body\.(\d+)\.(weight|bias)")


class UpscalerError(EaselError):
    """An upscaler file that cannot be loaded; the one-line text names the file and what was expected."""


def load_upscaler(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Upscaler:
    """The ESRGAN-family network in a .pth/.pt/.ckpt/.safetensors file, on `device` in `dtype`."""
    path = Path(path)
    shown = _shown(str(path), 300)
    state = _tensors(_unwrap(_read(path, shown)), shown)
    network, architecture, origin = _network(state, shown)
    _check_fit(network, state, origin, architecture, shown)
    network.load_state_dict(state, strict=True)
    return Upscaler(network, name=path.stem, architecture=architecture, scale=network.scale,
                    channels=network.in_channels, multiple=network.multiple).to(device, dtype)


# ---- reading the file ----------------------------------------------------------------------------


def _read(path: Path, shown: str) -> object:
    """What the file holds, or an UpscalerError saying in one line why it cannot be read."""
    if path.suffix.lower() not in SUFFIXES:
        raise UpscalerError(f"cannot load {shown} as an upscaler: easel reads {', '.join(SUFFIXES)} files")
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except FileNotFoundError:
        raise UpscalerError(f"no upscaler at {shown}: the file does not exist") from None
    except IsADirectoryError:
        raise UpscalerError(f"cannot load {shown} as an upscaler: it is a folder, not a weights file") from None
    except OSError as error:
        raise UpscalerError(f"cannot read {shown}: {_shown(error.strerror or str(error))}") from None
    if not head:
        raise UpscalerError(f"cannot load {shown} as an upscaler: the file is empty")

    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise UpscalerError(f"cannot read {shown}: it is not a whole safetensors file ({_first(error)})") from None

    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTOCOL:
        raise UpscalerError(f"cannot read {shown}: it is not a torch checkpoint (those are zip archives or pickles)")
    try:
        # Mapped rather than read where torch allows it (zip files), so a huge non-upscaler is refused cheaply.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head.startswith(_ZIP_MAGIC))
    except Exception as error:  # noqa: BLE001 — arbitrary bytes make torch.load raise nearly anything
        text = str(error)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f" such as {_shown(found.group(1))}" if found else ""
            raise UpscalerError(f"cannot read {shown}: it holds Python objects{what} besides tensors, "
                                "and easel loads only plain weights") from None
        raise UpscalerError(f"cannot read {shown}: it is cut short or damaged (an interrupted download?)") from None


def _unwrap(data: object) -> object:
    """The state dict inside the usual training wrappers ({"params_ema": …}, {"state_dict": …}, …)."""
    for _ in range(len(_WRAPPERS)):
        if not isinstance(data, Mapping):
            break
        inner = next((data[key] for key in _WRAPPERS if isinstance(data.get(key), Mapping)), None)
        if inner is None:
            break
        data = inner
    return data


def _tensors(data: object, shown: str) -> dict[str, torch.Tensor]:
    """The file's named tensors (other entries, such as an iteration count, dropped), without `module.`."""
    if not isinstance(data, Mapping):
        raise UpscalerError(f"{shown} is not an upscaler easel knows ({_EXPECTED}; "
                            f"it holds a {type(data).__name__}, not a dict of weights)")
    state = {key: value for key, value in data.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}
    if not state:
        raise UpscalerError(f"{shown} is not an upscaler easel knows ({_EXPECTED}; it holds no tensors)")
    if all(key.startswith("module.") for key in state):  # saved from a DataParallel wrapper
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


# ---- telling the networks apart ------------------------------------------------------------------


class _Misfit(Exception):
    """The keys name a known network but their shapes do not add up; the text says which."""


def _network(state: dict[str, torch.Tensor], shown: str) -> tuple[nn.Module, str, dict[str, str]]:
    """An empty network of the right shape for `state` (renamed in place where needed), its architecture,
    and the file's own name of every renamed key (for messages)."""
    origin: dict[str, str] = {}
    kind = "ESRGAN"
    try:
        if "model.0.weight" in state and any(_OLD_BLOCK.fullmatch(key) for key in state):
            origin = _rename_old(state)
        if "conv_first.weight" in state and "conv_last.weight" in state:
            return _rrdb(state), "ESRGAN", origin
        if "body.0.weight" in state and all(_COMPACT.fullmatch(key) for key in state):
            kind = "Real-ESRGAN compact (SRVGG)"
            return _compact(state), "SRVGG", origin
    except _Misfit as misfit:
        raise UpscalerError(f"{shown} looks like {kind} weights but {misfit}") from None
    keys = ", ".join(repr(_shown(key, 60)) for key in list(state)[:3])
    raise UpscalerError(f"{shown} is not an upscaler easel knows ({_EXPECTED}; found keys like {keys})")


def _rename_old(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Rename the original ESRGAN layout's keys to BasicSR's, in place; returns new name → old name."""
    blocks = {int(match[1]) for key in state if (match := _OLD_BLOCK.fullmatch(key))}
    count = len(blocks)
    if blocks != set(range(count)):
        raise _Misfit(f"its RRDB blocks are not numbered 0…{count - 1}")
    convs = sorted({int(match[1]) for key in state if (match := _OLD_CONV.fullmatch(key)) and int(match[1]) >= 2})
    if len(convs) < 2:
        raise _Misfit("it has no HR and last convolutions after the RRDB trunk (model.2 onwards)")
    *ups, hr, last = convs
    if ups != [3 * k for k in range(1, len(ups) + 1)] or hr != 3 * len(ups) + 2 or last != hr + 2:
        layout = ", ".join(f"model.{index}" for index in convs)
        raise _Misfit(f"its layers after the trunk ({layout}) are not ESRGAN's nearest-upsample convolutions "
                      "(a pixel-shuffle variant?)")
    names = {0: "conv_first", hr: "conv_hr", last: "conv_last"} | {3 * k: f"conv_up{k}"
                                                                    for k in range(1, len(ups) + 1)}

    def new_name(key: str) -> str:
        if match := _OLD_BLOCK.fullmatch(key):
            return f"body.{match[1]}.rdb{match[2]}.conv{match[3]}.{match[4]}"
        if (match := _OLD_TRUNK.fullmatch(key)) and int(match[1]) == count:
            return f"conv_body.{match[2]}"
        if (match := _OLD_CONV.fullmatch(key)) and int(match[1]) in names:
            return f"{names[int(match[1])]}.{match[2]}"
        return key

    renamed = {new_name(key): value for key, value in state.items()}
    state.clear()
    state.update(renamed)
    # Every key the network will ask for, in the file's own naming, so a missing one is named as the file would.
    wanted = ["model.0", f"model.1.sub.{count}", *(f"model.{index}" for index in names if index)] + [
        f"model.1.sub.{block}.RDB{dense}.conv{conv}.0"
        for block in range(count) for dense in (1, 2, 3) for conv in range(1, 6)]
    return {new_name(f"{old}.{kind}"): f"{old}.{kind}" for old in wanted for kind in ("weight", "bias")}


def _rrdb(state: dict[str, torch.Tensor]) -> RRDBNet:
    """An RRDBNet shaped like BasicSR-named `state`."""
    features, in_raw = _shape(state, "conv_first.weight", 4)[:2]
    out_channels = _shape(state, "conv_last.weight", 4)[0]
    blocks = {int(match[1]) for key in state if (match := _NEW_BLOCK.fullmatch(key))}
    if blocks != set(range(len(blocks))):
        raise _Misfit(f"its RRDB blocks are not numbered 0…{len(blocks) - 1}")
    growth = _shape(state, "body.0.rdb1.conv1.weight", 4)[0] if blocks else 32
    ups = {int(match[1]) for key in state if (match := _NEW_UP.fullmatch(key))}
    if ups != set(range(1, len(ups) + 1)):
        raise _Misfit(f"its upsampling convolutions are not numbered conv_up1…conv_up{len(ups)}")
    # BasicSR's scale-2 and scale-1 models pixel-unshuffle the picture by 2 or 4 before conv_first.
    unshuffle = next((factor for factor in (1, 2, 4) if in_raw in (factor**2, 3 * factor**2)), None)
    if unshuffle is None or out_channels not in (1, 3):
        raise _Misfit(f"its first convolution takes {in_raw} channels and its last gives {out_channels} "
                      "(an image has 1 or 3, or 4 or 16 times that after a pixel unshuffle)")
    if (2 ** len(ups)) % unshuffle:
        raise _Misfit(f"{len(ups)} upsampling convolution(s) cannot undo a {unshuffle}× pixel unshuffle")
    return RRDBNet(in_channels=in_raw // unshuffle**2, out_channels=out_channels, features=features,
                   blocks=len(blocks), growth=growth, upsamplings=len(ups), unshuffle=unshuffle)


def _compact(state: dict[str, torch.Tensor]) -> SRVGGNetCompact:
    """An SRVGGNetCompact shaped like `state`."""
    convs = sorted({int(match[1]) for key in state if (match := _COMPACT.fullmatch(key)) and state[key].ndim == 4})
    acts = sorted({int(match[1]) for key in state if (match := _COMPACT.fullmatch(key))
                   and match[2] == "weight" and state[key].ndim == 1})
    if len(convs) < 2 or convs != list(range(0, 2 * len(convs), 2)):
        raise _Misfit("its convolutions are not at body.0, body.2, body.4, …")
    if acts and acts != list(range(1, convs[-1], 2)):
        raise _Misfit("its PReLU weights are not at body.1, body.3, …, one after each convolution but the last")
    features, channels = _shape(state, "body.0.weight", 4)[:2]
    last = _shape(state, f"body.{convs[-1]}.weight", 4)[0]
    scale = math.isqrt(last // channels)
    if channels not in (1, 3) or scale < 1 or channels * scale**2 != last:
        raise _Misfit(f"its last convolution gives {last} channels, not the picture's {channels} × scale²")
    return SRVGGNetCompact(channels=channels, features=features, convs=len(convs) - 2, scale=scale,
                           activation="prelu" if acts else "relu")


def _shape(state: dict[str, torch.Tensor], key: str, ndim: int) -> torch.Size:
    if key not in state:
        raise _Misfit(f"it has no {key!r}")
    if state[key].ndim != ndim:
        raise _Misfit(f"its {key!r} has {state[key].ndim} dimensions where {ndim} were expected")
    return state[key].shape


def _check_fit(network: nn.Module, state: dict[str, torch.Tensor], origin: dict[str, str], architecture: str,
               shown: str) -> None:
    """Say in one line, in the file's own key names, what keeps `state` from loading strictly into `network`."""
    expected = network.state_dict()
    missing = [origin.get(key, key) for key in expected if key not in state]
    unexpected = [origin.get(key, key) for key in state if key not in expected]
    wrong = [f"{origin.get(key, key)!r} is {_size(state[key])} where {_size(value)} was expected"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    problems = ([f"no {_list(missing)}"] if missing else []) + ([f"unexpected {_list(unexpected)}"]
                                                                if unexpected else []) + wrong[:2]
    if problems:
        raise UpscalerError(f"{shown} looks like {architecture} weights but they do not fit that network "
                            f"({'; '.join(_shown(problem) for problem in problems)})")


# ---- one-line text -------------------------------------------------------------------------------


def _list(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(repr(key) for key in keys[:3]) + more


def _size(tensor: torch.Tensor) -> str:
    return "×".join(str(n) for n in tensor.shape) or "a scalar"


def _first(error: BaseException) -> str:
    """The first sentence of an exception's text, fit for one line."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return _shown(text.split(". ")[0].rstrip("."))


def _shown(text: str, limit: int = 160) -> str:
    """Text made safe for a one-line message: control characters escaped, and cut short."""
    text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
