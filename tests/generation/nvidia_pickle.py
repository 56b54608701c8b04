"""Write a StyleGAN2 generator as NVIDIA's training code pickles it (torch_utils.persistence layout), for tests.

Every network and sub-network becomes a call to torch_utils.persistence._reconstruct_persistent_obj(meta),
meta carrying the module's source (which NVIDIA's loader would exec) and its __dict__ as state."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

from torch import nn

from tests.generation.test_face_checkpoint import nvidia_modules


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
