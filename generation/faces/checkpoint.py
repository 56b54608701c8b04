"""Reading NVIDIA's StyleGAN2-ADA network pickles as plain tensors, never running anything the file holds.

NVIDIA's `torch_utils.persistence` pickles each network as a call `_reconstruct_persistent_obj(meta)`,
where `meta` carries the defining module's whole source (`module_src`, which NVIDIA's loader exec's),
the class name and the object's `__dict__`; tensors inside are pickled the classic torch way
(`torch._utils._rebuild_tensor_v2` over a storage pickled as `torch.storage._load_from_bytes(blob)`,
the blob a nested legacy `torch.save`). Here every global the file names is looked up in an explicit
allow-list of stand-ins made for this one read: a persistent network becomes an inert record of its class
name and state (`module_src` is dropped unread), a storage blob goes through `torch.load(weights_only=True)`,
and anything else (builtins.exec, os.system, an unknown class…) stops the read with a `CheckpointError`.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.errors import EaselError

_WHAT_IT_HOLDS = "a StyleGAN2 checkpoint holds only networks and tensors"
_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy 1.x and 2.x spell it differently
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(EaselError):
    """A StyleGAN2 network pickle that cannot or must not be read; the one-line text names the file and why."""


class _Persistent:
    """What one of NVIDIA's persistent networks becomes here: its class name and saved `__dict__`, nothing runnable."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name = class_name
        self.state = state


class _PlainModule:
    """Base of the stand-ins for ordinary `torch.nn` modules; pickle rebuilds them with NEWOBJ and BUILD."""

    __slots__ = ("state",)
    class_name = "Module"

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"a {self.class_name} module's state is a {type(state).__name__}, not a dict")
        self.state = state


def read_generator(path: Path, key: str = "G_ema") -> tuple[dict, dict[str, torch.Tensor]]:
    """The generator's init kwargs (plain dicts) and its `state_dict()`, read from an NVIDIA network pickle."""
    path = Path(path)
    shown = _shown(str(path))
    try:
        with path.open("rb") as file:
            head = file.read(4)
            if head == _ZIP_MAGIC:
                raise CheckpointError(
                    f"cannot read {shown}: it is a zip archive (a torch.save file?), not a StyleGAN2 network pickle"
                )
            file.seek(0)
            data = _Reader(file, shown).load()
    except FileNotFoundError:
        raise CheckpointError(f"no StyleGAN2 checkpoint at {shown}: the file does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"cannot read {shown}: it is a folder, not a StyleGAN2 network pickle") from None
    except PermissionError:
        raise CheckpointError(f"cannot read {shown}: permission denied") from None
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(f"cannot read {shown}: the file ends too early (an interrupted download?)") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, RecursionError, MemoryError) as error:
        # The stream itself is broken (not a pickle, cut short, or opcodes that make no sense).
        detail = _shown(str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise CheckpointError(
            f"cannot read {shown}: it is not a whole StyleGAN2 network pickle ({detail})"
        ) from None

    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"cannot read {shown}: it holds a {type(data).__name__}, not the dict of networks NVIDIA's pickles hold"
        )
    if key not in data:
        held = ", ".join(sorted(_shown(str(name)) for name in data)) or "nothing"
        raise CheckpointError(f"cannot read {shown}: it has no {key!r} network (it holds: {held})")
    network = data[key]
    if not isinstance(network, _Persistent) or network.class_name != "Generator":
        found = network.class_name if isinstance(network, (_Persistent, _PlainModule)) else type(network).__name__
        raise CheckpointError(f"cannot read {shown}: its {key!r} is a {_shown(found)}, not a StyleGAN2 Generator")

    state = network.state
    args = state.get("_init_args", ())
    kwargs = state.get("_init_kwargs")
    if not isinstance(kwargs, Mapping) or not all(isinstance(name, str) for name in kwargs):
        raise CheckpointError(
            f"cannot read {shown}: its {key!r} does not record the keyword arguments it was built with"
        )
    if args:
        raise CheckpointError(
            f"cannot read {shown}: its {key!r} was built with positional arguments, which NVIDIA's code never uses"
        )
    tensors: dict[str, torch.Tensor] = {}
    _collect(network, "", tensors, shown, key, set())
    return _plain(kwargs), tensors


def _collect(module: object, prefix: str, out: dict[str, torch.Tensor], shown: str, key: str, path: set[int]) -> None:
    # Mirrors nn.Module.state_dict(): own parameters, then buffers not marked non-persistent, then each child.
    where = f"{key}.{prefix[:-1]}" if prefix else key
    if not isinstance(module, (_Persistent, _PlainModule)) or not hasattr(module, "state"):
        kind = type(module).__name__
        raise CheckpointError(f"cannot read {shown}: {_shown(where)} is a {kind}, not a network module")
    if id(module) in path:
        raise CheckpointError(f"cannot read {shown}: {_shown(where)} contains itself")
    state = module.state
    parameters, buffers, children = (state.get(name) for name in ("_parameters", "_buffers", "_modules"))
    non_persistent = state.get("_non_persistent_buffers_set", ())
    if not all(isinstance(part, Mapping) for part in (parameters, buffers, children)) or not isinstance(
        non_persistent, (set, frozenset, tuple, list)
    ):
        raise CheckpointError(
            f"cannot read {shown}: {_shown(where)} lacks the parameters, buffers and children of a torch module"
        )
    entries = list(parameters.items()) + [(n, b) for n, b in buffers.items() if n not in non_persistent]
    for name, tensor in entries:
        if tensor is None:
            continue
        if not isinstance(name, str) or type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            raise CheckpointError(f"cannot read {shown}: {_shown(where)}.{_shown(str(name))} is not a tensor")
        out[prefix + name] = tensor.detach()
    path.add(id(module))
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(name, str):
            raise CheckpointError(f"cannot read {shown}: {_shown(where)} names a child with a {type(name).__name__}")
        _collect(child, f"{prefix}{name}.", out, shown, key, path)
    path.discard(id(module))


def _plain(value: Any) -> Any:
    """Init kwargs as plain data: every dict (EasyDict stand-in, OrderedDict) becomes a dict, recursively."""
    if isinstance(value, Mapping):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def _shown(text: str, limit: int = 120) -> str:
    """Text from the file made safe for a one-line message: escaped, and cut short."""
    text = ascii(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Reader(pickle.Unpickler):
    """Unpickler whose `find_class` only hands out this read's own inert stand-ins; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, shown: str) -> None:
        super().__init__(file)
        self._shown = shown
        # Made afresh for every read, so a hostile stream that BUILDs onto a stand-in touches only this read.
        self._allowed = _stand_ins(shown)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        found = self._allowed.get((module, name))
        if found is None and (module == "torch" or module.startswith("torch.nn.modules.")):
            found = _torch_stand_in(module, name)
        if found is None:
            named = f"{_shown(module, 60)}.{_shown(name, 60)}"
            raise CheckpointError(f"refused to load {self._shown}: it asks to run {named}; {_WHAT_IT_HOLDS}")
        return found

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        named = _shown(repr(pid), 60)
        raise CheckpointError(
            f"refused to load {self._shown}: it refers to outside objects by id ({named}); {_WHAT_IT_HOLDS}"
        )


def _torch_stand_in(module: str, name: str) -> Any:
    # torch dtypes (torch.float32…) are immutable values; torch.nn module classes become inert stand-ins.
    # Only modules torch itself already imported are looked at: nothing is imported because a file names it.
    if module == "torch":
        value = getattr(torch, name, None)
        return value if isinstance(value, torch.dtype) else None
    owner = sys.modules.get(module)
    cls = getattr(owner, name, None) if owner is not None else None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        return None
    return type(name, (_PlainModule,), {"__slots__": (), "class_name": name})


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _stand_ins(shown: str) -> dict[tuple[str, str], Any]:
    """The allow-list: each global a real StyleGAN2-ADA pickle names, mapped to a harmless callable of our own."""

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"refused to load {shown}: {why}; {_WHAT_IT_HOLDS}")

    def reconstruct_persistent_obj(meta: object) -> _Persistent:
        # meta['module_src'] is NVIDIA's class source, which their loader exec's; it is never read here.
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise refuse("a persistent object in it is not a saved class instance")
        class_name, state = meta.get("class_name"), meta.get("state")
        if not isinstance(class_name, str) or not isinstance(state, dict):
            raise refuse("a persistent object in it has no class name or no state")
        return _Persistent(class_name, state)

    class EasyDict(dict):
        """Stand-in for dnnlib.util.EasyDict: a plain dict that pickle fills with SETITEMS."""

        def __setstate__(self, state: object) -> None:
            if state:
                raise refuse("an EasyDict in it carries attributes")

    def make_set(items: object = ()) -> set:
        if not isinstance(items, (list, tuple)):
            raise refuse("a set in it is not built from a list")
        return set(items)

    def device(kind: object, index: object = None) -> torch.device:
        if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
            raise refuse("a torch device in it is malformed")
        return torch.device(kind) if index is None else torch.device(kind, index)

    def size(dims: object = ()) -> torch.Size:
        if not _ints(dims):
            raise refuse("a torch.Size in it is malformed")
        return torch.Size(dims)

    allowed: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
        ("collections", "OrderedDict"): collections.OrderedDict,  # a built-in type: immutable, calling it runs nothing
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("builtins", "set"): make_set,  # protocol 3 (NVIDIA's default then) has no set opcode
        ("torch", "device"): device,
        ("torch", "Size"): size,
    }
    return allowed | _tensor_stand_ins(shown, refuse) | _numpy_stand_ins(refuse)


def _tensor_stand_ins(shown: str, refuse: Callable[[str], CheckpointError]) -> dict[tuple[str, str], Any]:
    """The allow-list's part for tensors: storages read by torch's weights-only loader, tensors that fit them."""

    def load_from_bytes(blob: object) -> torch.storage.TypedStorage:
        if not isinstance(blob, bytes):
            raise refuse("a tensor storage in it is not a byte string")
        try:
            storage = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
        except Exception as error:  # torch's weights-only unpickler says why in a long multi-line message
            match = _UNSUPPORTED_GLOBAL.search(str(error))
            if match:
                raise refuse(f"a tensor storage in it asks to run {_shown(match.group(1), 80)}") from None
            raise refuse("a tensor storage in it is not plain tensor data") from None
        if not isinstance(storage, torch.storage.TypedStorage):
            raise refuse(f"a tensor storage in it holds a {type(storage).__name__}")
        return storage

    def check_hooks(hooks: object) -> None:
        # Backward hooks are pickled only for backward compatibility and are always empty in real files.
        if not isinstance(hooks, dict) or hooks:
            raise refuse("a tensor in it carries backward hooks")

    def rebuild_tensor_v2(storage: object, offset: object, size: object, stride: object, requires_grad: object,
                          hooks: object, metadata: object = None) -> torch.Tensor:
        if not isinstance(storage, torch.storage.TypedStorage):
            raise refuse("a tensor in it is not built on a tensor storage")
        if not (isinstance(offset, int) and _ints(size) and _ints(stride) and isinstance(requires_grad, bool)):
            raise refuse("a tensor in it has a malformed shape")
        check_hooks(hooks)
        if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, bool) for k, v in metadata.items()
        )):
            raise refuse("a tensor in it has malformed metadata")
        # torch's set_ grows a storage that is too small, so a forged shape could ask for any amount of memory.
        if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
            raise CheckpointError(f"cannot read {shown}: a tensor in it has a malformed shape")
        needed = 0 if 0 in size else offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
        if needed > storage._size():  # _size(): size() warns that TypedStorage is deprecated
            raise CheckpointError(f"cannot read {shown}: a tensor in it does not fit inside its storage")
        try:
            tensor = torch._utils._rebuild_tensor(storage, offset, size, stride)
            if metadata:
                torch._utils.set_tensor_metadata(tensor, metadata)
        except RuntimeError:
            raise CheckpointError(f"cannot read {shown}: a tensor in it does not fit inside its storage") from None
        return tensor

    def rebuild_parameter(data: object, requires_grad: object, hooks: object, state: object = None) -> torch.Tensor:
        if type(data) is not torch.Tensor or not isinstance(requires_grad, bool):
            raise refuse("a parameter in it does not wrap a plain tensor")
        check_hooks(hooks)
        return data  # Parameter-ness and any python attributes (state) do not matter for a state dict

    return {
        ("torch.storage", "_load_from_bytes"): load_from_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    }


def _numpy_stand_ins(refuse: Callable[[str], CheckpointError]) -> dict[tuple[str, str], Any]:
    """The allow-list's part for numpy values (in init kwargs): dtypes, scalars and arrays of plain numbers."""

    def numpy_dtype(spec: object, align: object = False, copy: object = True) -> np.dtype:
        # copy=True always: numpy's cached dtype singletons must never receive a BUILD from the file.
        if not isinstance(spec, str) or not isinstance(align, bool):
            raise refuse("a numpy dtype in it is malformed")
        dtype = np.dtype(spec, align, True)
        if dtype.hasobject:
            raise refuse("a numpy value in it holds Python objects")
        return dtype

    def numpy_scalar(dtype: object, data: object = None) -> Any:
        if not (isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(data, bytes)
                and len(data) == dtype.itemsize):
            raise refuse("a numpy scalar in it is malformed")
        return np.frombuffer(data, dtype)[0].item()

    class NdArray:
        """Token for `numpy.ndarray`, accepted only by numpy_reconstruct below."""

    def numpy_reconstruct(cls: object, shape: object, typecode: object) -> np.ndarray:
        # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') and a BUILD whose dtype comes from numpy_dtype.
        if cls is not NdArray or not _ints(shape) or typecode not in (b"b", "b"):
            raise refuse("a numpy array in it is malformed")
        return np.ndarray.__new__(np.ndarray, shape, "b")

    def numpy_frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
        # Protocol 5 pickles an array as _frombuffer(bytes, dtype, shape, order).
        if not (isinstance(buffer, (bytes, bytearray)) and isinstance(dtype, np.dtype) and not dtype.hasobject
                and _ints(shape) and order in ("C", "F") and dtype.itemsize * math.prod(shape) == len(buffer)):
            raise refuse("a numpy array in it is malformed")
        return np.frombuffer(buffer, dtype).reshape(shape, order=order)

    allowed: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("numpy", "dtype"): numpy_dtype,
        ("numpy", "ndarray"): NdArray,
    }
    for core in _NUMPY_CORE:
        allowed[(f"{core}.multiarray", "scalar")] = numpy_scalar
        allowed[(f"{core}.multiarray", "_reconstruct")] = numpy_reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = numpy_frombuffer
    return allowed


def _ints(values: object) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(value, int) for value in values)
