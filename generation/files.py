"""Weight files read without torch: a safetensors file's header, and sha256 hashes computed once per version.

Models, LoRAs and embeddings are identified by hashes (A1111's "Model hash", "Lora hashes", "TI hashes"); a
7 GB SDXL checkpoint takes a quarter of a minute to hash, so each (path, size, mtime) is hashed once, kept in
memory and, where EASEL_HASH_CACHE names a JSON file (`easel run`: data/model-hashes.json), across restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path

HASH_CACHE = "EASEL_HASH_CACHE"
_HASHES: dict[str, str] = {}  # "path|size|mtime|what" → sha256 hex, this process's (and the store's, once read)


def safetensors_header(path: Path) -> dict | None:
    """A safetensors file's JSON header (tensor names, dtypes, shapes; `__metadata__`), or None where the file
    has none: no tensor is read."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return header if isinstance(header, dict) else None


def sha256(path: Path, after_header: bool = False) -> str:
    """The file's sha256; `after_header`: of the tensor data after a safetensors header only (kohya's "addnet"
    hash, which editing the metadata leaves alone). Raises OSError when the file cannot be read."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{'data' if after_header else 'file'}"
    store = Path(os.environ[HASH_CACHE]) if os.environ.get(HASH_CACHE) else None
    if key not in _HASHES and store is not None and store.is_file():
        with contextlib.suppress(OSError, ValueError):
            _HASHES.update({k: v for k, v in json.loads(store.read_text(encoding="utf-8")).items()
                            if k not in _HASHES})
    if key not in _HASHES:
        _HASHES[key] = _digest(path, after_header)
        if store is not None:
            with contextlib.suppress(OSError):  # only a cache: a read-only folder costs a hash per start
                partial = store.with_suffix(".tmp")
                partial.write_text(json.dumps(_HASHES, indent=0), encoding="utf-8")
                partial.replace(store)
    return _HASHES[key]


def _digest(path: Path, after_header: bool) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if after_header:  # as sd-scripts' addnet_hash_safetensors: skip the 8-byte length and the header
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
