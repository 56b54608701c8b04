"""Reading StyleGAN2-ADA network pickles written here in NVIDIA's persistence layout, and refusing hostile ones."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from generation.faces.checkpoint import CheckpointError, read_generator
from storage.errors import EaselError
from tests.generation.nvidia_pickle import Payload, nvidia_modules


# --- writing pickles the way torch_utils.persistence and dnnlib lay them out -------------------------




def module_source(marker: Path) -> str:
    """NVIDIA's loader exec's this; if it ever ran here, the marker file would appear."""
    return f"open({str(marker)!r}, 'w').write('module_src was executed')\nclass Generator:\n    pass\n"


class Persistent(nn.Module):
    """A real torch module that pickles itself as NVIDIA's persistent_class decorator does."""

    writer: types.SimpleNamespace
    source: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self._init_args = ()
        self._init_kwargs = kwargs

    def __reduce__(self) -> tuple:
        meta = dict(
            type="class", version=6, module_src=type(self).source, class_name=type(self).__name__,
            state=dict(self.__dict__),
        )
        return type(self).writer.reconstruct, (meta,)


class FullyConnectedLayer(Persistent):
    def __init__(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        super().__init__(in_features=fan_in, out_features=fan_out, bias=bias)
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in))
        self.bias = nn.Parameter(torch.randn(fan_out)) if bias else None
        self.weight_gain = 1 / np.sqrt(fan_in)  # a numpy float64, as in NVIDIA's networks


class MappingNetwork(Persistent):
    def __init__(self, z_dim: int, w_dim: int) -> None:
        super().__init__(z_dim=z_dim, w_dim=w_dim, num_layers=2)
        self.fc0 = FullyConnectedLayer(z_dim, w_dim)
        self.fc1 = FullyConnectedLayer(w_dim, w_dim, bias=False)
        # Plain torch children, pickled the ordinary way (NEWOBJ of torch.nn.modules.* classes).
        self.extra = nn.ModuleList([nn.Linear(w_dim, w_dim), nn.Identity()])
        self.register_buffer("w_avg", torch.randn(w_dim))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)  # left out of state_dict()


class SynthesisLayer(Persistent):
    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__(channels=channels, resolution=resolution)
        self.weight = nn.Parameter(torch.randn(channels, channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64))
        self.activation = "lrelu"
        self.act_gain = np.sqrt(2)
        self.dtype = torch.float16
        self.taps = np.array([1.0, 3.0, 3.0, 1.0], dtype=np.float32)  # a numpy array attribute


class Generator(Persistent):
    def __init__(self, writer: types.SimpleNamespace) -> None:
        super().__init__(
            z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
            mapping_kwargs=writer.EasyDict(num_layers=2, lr_multiplier=0.01),
            synthesis_kwargs={"channel_base": 512, "conv_clamp": 256, "fp16": writer.EasyDict(num_res=[4, 8])},
        )
        self.mapping = MappingNetwork(4, 4)
        self.synthesis = SynthesisLayer(2, 4)
        self.register_parameter("unused", None)  # None entries are skipped, as state_dict() skips them
        self.shared = torch.arange(6, dtype=torch.int64).reshape(2, 3)[:, 1]  # a strided view, not a buffer


class Discriminator(Persistent):
    def __init__(self) -> None:
        super().__init__(c_dim=0, img_resolution=8)
        self.b8 = FullyConnectedLayer(3, 2)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[types.SimpleNamespace]:
    """The NVIDIA stand-in modules, present while the test builds and pickles; gone when the reader runs."""
    with nvidia_modules() as modules:
        Persistent.writer = modules
        Persistent.source = module_source(tmp_path / "MARKER")
        yield modules


def dump(path: Path, obj: object, protocol: int = 3) -> Path:
    """Pickle `obj` as NVIDIA's training loop does: plain pickle, protocol 3 by default as in Python 3.7."""
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def snapshot(writer: types.SimpleNamespace) -> dict:
    """A network pickle's top-level dict, as NVIDIA's training loop writes it."""
    return {
        "G": Generator(writer), "D": Discriminator(), "G_ema": Generator(writer), "augment_pipe": None,
        "training_set_kwargs": writer.EasyDict(path="ffhq.zip", use_labels=False, max_size=70000, xflip=True),
    }


# --- reading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_reads_generator_state_dict_and_kwargs(writer: types.SimpleNamespace, tmp_path: Path, protocol: int) -> None:
    data = snapshot(writer)
    path = dump(tmp_path / "network-snapshot.pkl", data, protocol)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)

    kwargs, tensors = read_generator(path)

    expected = data["G_ema"].state_dict()
    assert list(tensors) == list(expected)  # same names, same order as nn.Module.state_dict()
    assert "mapping.extra.0.weight" in tensors and "mapping.fc1.bias" not in tensors
    assert "mapping.scratch" not in tensors and "unused" not in tensors and "shared" not in tensors
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name
        assert type(tensors[name]) is torch.Tensor and not tensors[name].requires_grad
    assert kwargs == {
        "z_dim": 4, "c_dim": 0, "w_dim": 4, "img_resolution": 8, "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2, "lr_multiplier": 0.01},
        "synthesis_kwargs": {"channel_base": 512, "conv_clamp": 256, "fp16": {"num_res": [4, 8]}},
    }
    assert type(kwargs["mapping_kwargs"]) is dict and type(kwargs["synthesis_kwargs"]["fp16"]) is dict
    assert not (tmp_path / "MARKER").exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing was imported


def test_reads_numpy_1_spelling(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    # numpy 1.x, which NVIDIA's released pickles were written with, names its scalars numpy.core.multiarray.
    data = snapshot(writer)
    stream = pickle.dumps(data, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy.core.multiarray\nscalar" in stream
    (tmp_path / "old.pkl").write_bytes(stream)
    _, tensors = read_generator(tmp_path / "old.pkl")
    assert torch.equal(tensors["synthesis.weight"], data["G_ema"].synthesis.weight)


def test_reads_another_key(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    data = snapshot(writer)
    _, tensors = read_generator(dump(tmp_path / "net.pkl", data), key="G")
    assert torch.equal(tensors["mapping.fc0.weight"], data["G"].state_dict()["mapping.fc0.weight"])
    assert not (tmp_path / "MARKER").exists()


# --- refusing --------------------------------------------------------------------------------------


class Reduces:
    """Pickles as a call of `func(*args)`: the classic way a pickle runs code when it is loaded."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def assert_refused(path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        read_generator(path)
    text = str(caught.value)
    assert isinstance(caught.value, EaselError)
    assert path.name in text and "\n" not in text, text
    for word in words:
        assert word in text, text
    return text


def test_refuses_exec(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = Reduces(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')")
    path = dump(tmp_path / "evil.pkl", {"x": evil, **snapshot(writer)})
    text = assert_refused(path, "refused to load", "builtins.exec", "networks and tensors")
    assert text == (
        f"refused to load {path}: it asks to run builtins.exec; a StyleGAN2 checkpoint holds only networks and tensors"
    )
    assert not marker.exists()


def test_refuses_os_system_and_posix_system(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    # os.system pickles as posix.system on Linux; a hand-written stream can still name os.system.
    by_os = b"\x80\x03cos\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03."
    (tmp_path / "os.pkl").write_bytes(by_os)
    assert_refused(tmp_path / "os.pkl", "os.system")
    path = dump(tmp_path / "posix.pkl", {"G_ema": Reduces(os.system, f"touch {marker}")})
    assert_refused(path, "posix.system")
    assert not marker.exists()


@pytest.mark.parametrize(
    "func, args",
    [(builtins.eval, ("1+1",)), (builtins.getattr, ("", "join")), (torch.load, ("x.pt",)), (np.load, ("x.npy",))],
)
def test_refuses_other_callables(tmp_path: Path, func: types.FunctionType, args: tuple) -> None:
    path = dump(tmp_path / "trick.pkl", {"G_ema": Reduces(func, *args)})
    assert_refused(path, f"it asks to run {func.__module__}.{func.__name__};")


def test_refuses_unknown_class(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    path = dump(tmp_path / "odd.pkl", {**snapshot(writer), "extra": Payload()})
    assert_refused(path, "evilpkg.payload.Payload")


def test_refuses_storage_blob_that_needs_code(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    blob = io.BytesIO()
    torch.save(Reduces(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')"), blob,
               _use_new_zipfile_serialization=False)
    tensor = Reduces(torch.storage._load_from_bytes, blob.getvalue())
    path = dump(tmp_path / "blob.pkl", {"G_ema": tensor})
    assert_refused(path, "a tensor storage in it asks to run exec")
    assert not marker.exists()


def test_refuses_persistent_ids(tmp_path: Path) -> None:
    path = tmp_path / "pid.pkl"
    path.write_bytes(b"\x80\x02X\x03\x00\x00\x00abcQ.")
    assert_refused(path, "refers to outside objects")


def test_refuses_truncated_file(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    whole = dump(tmp_path / "whole.pkl", snapshot(writer)).read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(whole[: len(whole) // 2])
    assert_refused(path, "cannot read")


@pytest.mark.parametrize(
    "content", [b"", b"this is not a pickle at all\n", b"PK\x03\x04 a zip archive", b"\x80\x04\x95\xff\xff"]
)
def test_refuses_files_that_are_not_pickles(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pkl"
    path.write_bytes(content)
    assert_refused(path, "cannot read")


def test_refuses_missing_file(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nowhere.pkl", "does not exist")


def test_refuses_file_without_g_ema(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    data = snapshot(writer)
    del data["G_ema"]
    assert_refused(dump(tmp_path / "no-ema.pkl", data), "'G_ema'", "D, G, augment_pipe")


def test_refuses_wrong_network_class(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    path = dump(tmp_path / "swapped.pkl", {**snapshot(writer), "G_ema": Discriminator()})
    assert_refused(path, "Discriminator", "not a StyleGAN2 Generator")
    path = dump(tmp_path / "plain.pkl", {"G_ema": nn.Linear(2, 2)})
    assert_refused(path, "Linear", "not a StyleGAN2 Generator")


def test_refuses_tensor_outside_its_storage(writer: types.SimpleNamespace, tmp_path: Path) -> None:
    storage = Reduces(torch.storage._load_from_bytes, _storage_blob(torch.zeros(2)))
    tensor = Reduces(torch._utils._rebuild_tensor_v2, storage, 0, (10**9,), (1,), False, collections.OrderedDict())
    generator = Generator(writer)
    generator._parameters["huge"] = tensor  # type: ignore[assignment]
    assert_refused(dump(tmp_path / "oob.pkl", {"G_ema": generator}), "does not fit")


def _storage_blob(tensor: torch.Tensor) -> bytes:
    """The nested legacy torch.save blob that pickling a tensor's storage produces."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is deprecated, but it is what tensors pickle
        return tensor.storage().__reduce__()[1][0]
