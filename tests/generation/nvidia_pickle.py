"""Write a StyleGAN2 generator as NVIDIA's training code pickles it (torch_utils.persistence layout), for tests.

Every network and sub-network becomes a call to torch_utils.persistence._reconstruct_persistent_obj(meta),
meta carrying the module's source (which NVIDIA's loader would exec) and its __dict__ as state. Also the tiny
random generator the face tests (and the bot's face tests) draw with."""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from generation.faces.stylegan2 import Generator

# A 32 px generator that draws a face in milliseconds on a CPU.
TINY = dict(z_dim=16, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
            synthesis_kwargs={"channel_base": 256, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": 256})


@contextlib.contextmanager
def nvidia_modules() -> Iterator[types.SimpleNamespace]:
    """Throwaway `torch_utils.persistence` and `dnnlib.util` modules, present only while a test pickle is written."""

    def _reconstruct_persistent_obj(meta: dict) -> None:  # pickle records it by name; it is never called
        raise AssertionError("the reader must not call anything from the file")

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    fake = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": types.ModuleType("torch_utils.persistence"),
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": types.ModuleType("dnnlib.util"),
        "evilpkg": types.ModuleType("evilpkg"),
        "evilpkg.payload": types.ModuleType("evilpkg.payload"),
    }
    fake["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fake["dnnlib.util"].EasyDict = EasyDict
    fake["evilpkg.payload"].Payload = Payload
    saved = {name: sys.modules.get(name) for name in fake}
    sys.modules.update(fake)
    try:
        yield types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Payload:
    """An arbitrary class from a module the reader has never heard of."""


Payload.__module__ = "evilpkg.payload"


class _Persisted:
    def __init__(self, reconstruct, class_name: str, state: dict, source: str) -> None:
        self.reconstruct, self.class_name, self.state, self.source = reconstruct, class_name, state, source

    def __reduce__(self) -> tuple:
        meta = dict(type="class", version=6, module_src=self.source, class_name=self.class_name, state=self.state)
        return self.reconstruct, (meta,)


def _persisted(reconstruct, module: nn.Module, source: str, init_kwargs: dict | None = None) -> _Persisted:
    state = dict(
        training=False,
        _parameters=OrderedDict(module._parameters),
        _buffers=OrderedDict(module._buffers),
        _non_persistent_buffers_set=set(module._non_persistent_buffers_set),
        _modules=OrderedDict((name, _persisted(reconstruct, child, source)) for name, child in module._modules.items()),
        _init_args=(),
        _init_kwargs=dict(init_kwargs or {}),
    )
    return _Persisted(reconstruct, type(module).__name__, state, source)


def write_nvidia_pickle(path: Path, generator: nn.Module, init_kwargs: dict, source: str = "raise SystemExit") -> Path:
    """`path` as a network pickle {'G', 'D', 'G_ema', …} holding `generator` as G_ema (and G)."""
    with nvidia_modules() as modules:
        network = _persisted(modules.reconstruct, generator, source, init_kwargs)
        data = {"G": network, "D": None, "G_ema": network, "augment_pipe": None,
                "training_set_kwargs": modules.EasyDict(resolution=generator.img_resolution)}
        path.write_bytes(pickle.dumps(data, protocol=3))
    return path


def tiny_generator(seed: int = 0) -> Generator:
    """The TINY generator with random noise, w_avg, biases and constant input too, so each of them matters."""
    torch.manual_seed(seed)
    generator = Generator(**TINY)
    with torch.no_grad():  # random everywhere it matters, as after training
        for name, tensor in generator.state_dict().items():
            if "noise" in name or "w_avg" in name or name.endswith("bias") or name.endswith("const"):
                tensor.copy_(torch.randn_like(tensor) * 0.5)
    return generator


def write_tiny_faces(path: Path, seed: int = 0) -> Path:
    """`path` as a [faces] checkpoint: tiny_generator(seed) in NVIDIA's pickle layout."""
    return write_nvidia_pickle(path, tiny_generator(seed), TINY)
