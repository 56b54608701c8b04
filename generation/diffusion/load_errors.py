"""Why a model did not load, in words for a newcomer: the real cause read off the exception chain, and what to do."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import pickle
import socket
import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import huggingface_hub
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

_SET_MODEL = (
    "set [generation] model in config.toml (`easel init` writes one, every key commented) to a local "
    "diffusers folder or a .safetensors/.ckpt file"
)
_CONNECT = "connect once so the first download (about 4 GB for SD 1.5) can finish"
_TRY_TINY = (
    'try easel offline right now with `easel make-tiny-model tiny-model` and model = "tiny-model" in config.toml '
    "(it draws noise, but shows the whole path works)"
)
_EXAMPLE_ID = "'stable-diffusion-v1-5/stable-diffusion-v1-5'"


def _optional(module: str, name: str) -> tuple[type[BaseException], ...]:
    try:
        return (getattr(importlib.import_module(module), name),)
    except (ImportError, AttributeError):
        return ()


# The HTTP clients under the hub libraries: huggingface_hub's httpx2, and httpx and requests in diffusers.
_TIMEOUTS = (
    _optional("httpx2", "TimeoutException") + _optional("httpx", "TimeoutException") + _optional("requests", "Timeout")
)
_TRANSPORT = (
    _optional("httpx2", "TransportError") + _optional("httpx", "TransportError")
    + _optional("requests", "ConnectionError")
)
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


@dataclasses.dataclass(frozen=True)
class HubTrouble:
    """Why the hub did not hand over what diffusers asked for; `detail` is a short phrase, a repo id or a file name."""

    # network: the hub was not reached (DNS, refused, timeout…); connection: reached, but the connection broke;
    # missing: not in the local cache, for no reason the chain shows.
    kind: Literal["offline", "network", "connection", "not_found", "gated", "missing_file", "http", "missing"]
    detail: str = ""

    def describe(self, what: str) -> str:
        """The cause as a clause about `what` ("the model is", "they are")."""
        if self.kind == "offline":
            return f"Hugging Face offline mode is on ({_offline_variable()} is set) and {what} not downloaded yet"
        if self.kind == "network":
            return f"no network connection ({self.detail})"
        if self.kind == "connection":
            return f"the connection to the hub failed ({self.detail})"
        if self.kind == "not_found":
            return f"the hub has no repo {self.detail!r}" if self.detail else "the repo is not on the hub"
        if self.kind == "gated":
            return "the repo is gated: accept its terms on the hub and log in with `hf auth login`"
        if self.kind == "missing_file":
            return f"the repo has no file {self.detail!r}"
        if self.kind == "http":
            return f"the hub answered HTTP {self.detail}"
        return self.detail


def exception_chain(exc: BaseException) -> list[BaseException]:
    """exc and every exception behind it (__cause__ first, then __context__), each once."""
    seen: set[int] = set()
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        found.append(link)
        todo.extend((link.__context__, link.__cause__))  # pop() takes the cause first
    return found


def root(exc: BaseException) -> BaseException:
    # diffusers re-raises hub errors under a generic text ("not fully cached locally"); name the cause instead.
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _shorten(text: str, limit: int = 300) -> str:
    """text on one line; past `limit`, cut after whole sentences or words and marked with "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    if end >= limit // 3:
        return text[:end] + "…"
    space = text.rfind(" ", 0, limit + 1)
    return (text[:space] if space > 0 else text[:limit]).rstrip(" ,;:(") + "…"


def reason(exc: BaseException) -> str:
    return _shorten(str(exc)) or type(exc).__name__


def file_reason(exc: BaseException, single_file: bool) -> str:
    """The library's reason a weights file did not load: diffusers' own text names only the file."""
    chain = exception_chain(exc)
    safetensors = [link for link in chain if isinstance(link, SafetensorError)]
    # The deepest unpickling error says what torch.load met; the ones above it explain weights_only at length.
    unpickled = [link for link in chain if isinstance(link, pickle.UnpicklingError)]
    found = safetensors[:1] or unpickled[-1:]
    if not found:
        return reason(exc)
    if single_file:
        return f"the file is not a readable {'safetensors' if safetensors else '.ckpt'} file ({reason(found[0])})"
    return f"{reason(exc).rstrip('. ')} ({reason(found[0])})"  # diffusers' text says which of the folder's files


def sentence(text: str) -> str:
    return text if text.endswith((".", "…", "!", "?")) else text + "."


def _offline_variable() -> str:
    # huggingface_hub turns offline mode on for either variable; name the one this machine has.
    if os.environ.get("TRANSFORMERS_OFFLINE") and not os.environ.get("HF_HUB_OFFLINE"):
        return "TRANSFORMERS_OFFLINE"
    return "HF_HUB_OFFLINE"


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _host(chain: list[BaseException]) -> str:
    for link in chain:
        try:
            netloc = urlsplit(str(link.request.url)).netloc  # httpx errors carry the request they failed on
        except (AttributeError, RuntimeError):
            continue
        if netloc:
            return netloc
    return urlsplit(huggingface_hub.constants.ENDPOINT).netloc or "the hub"


def _network_cause(chain: list[BaseException]) -> tuple[Literal["network", "connection"], str] | None:
    """("network" or "connection", a short cause) when the hub could not be reached at all."""
    host = _host(chain)
    for link in chain:  # the operating system's own error, at the bottom of the chain, says it best
        if isinstance(link, ssl.SSLError):
            return "connection", f"secure connection to {host} failed: {reason(link)}"
        if isinstance(link, socket.gaierror):
            return "network", f"cannot resolve {host.rsplit(':', 1)[0]}: {link.strerror or link}"
        if isinstance(link, ConnectionRefusedError):
            return "network", f"connection to {host} refused"
        if isinstance(link, TimeoutError):
            return "network", f"connection to {host} timed out"
        if isinstance(link, OSError) and link.errno in _UNREACHABLE:
            return "network", f"{host} is unreachable: {link.strerror or link}"
        if isinstance(link, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "connection", f"connection to {host} was cut: {link.strerror or link}"
    for link in chain:
        if isinstance(link, _TIMEOUTS):
            return "network", f"connection to {host} timed out"
        if isinstance(link, _TRANSPORT):
            return "connection", f"{host}: {type(link).__name__}: {reason(link)}"
    return None


def hub_trouble(exc: BaseException) -> HubTrouble | None:
    """The hub-side cause of a failed load, read off the exception chain; None when the hub was not the problem."""
    chain = exception_chain(exc)
    # Offline mode first: its errors speak of "outgoing traffic has been disabled" even when the cause is elsewhere.
    if any(isinstance(link, OfflineModeIsEnabled) for link in chain) or (
        huggingface_hub.constants.HF_HUB_OFFLINE and any(isinstance(link, LocalEntryNotFoundError) for link in chain)
    ):
        return HubTrouble("offline")
    for link in chain:
        if isinstance(link, GatedRepoError):  # a RepositoryNotFoundError too: look for it first
            return HubTrouble("gated", link.repo_id or "")
    for link in chain:
        if isinstance(link, RepositoryNotFoundError) or (
            isinstance(link, HfHubHTTPError)
            and not isinstance(link, (EntryNotFoundError, RevisionNotFoundError))
            and _status(link) in (401, 404)
            and "Invalid credentials" not in str(link)  # a bad token, not a missing repo
        ):
            return HubTrouble("not_found", getattr(link, "repo_id", None) or "")
    network = _network_cause(chain)
    if network is not None:
        return HubTrouble(*network)
    for link in chain:
        if isinstance(link, EntryNotFoundError) and not isinstance(link, LocalEntryNotFoundError):
            response = getattr(link, "response", None)
            name = urlsplit(str(response.url)).path.rsplit("/", 1)[-1] if response is not None else ""
            return HubTrouble("missing_file", name)
    for link in chain:
        status = _status(link)
        if isinstance(link, HfHubHTTPError) and status:
            phrase = getattr(link.response, "reason_phrase", "") or ""
            later = "; try again later" if status >= 500 or status == 429 else ""
            return HubTrouble("http", f"{status} {phrase}".strip() + later)
    return None


def hub_failure(model: str, path: Path, trouble: HubTrouble) -> str:
    endpoint = huggingface_hub.constants.ENDPOINT
    # "models/sd15" reads as a hub id too; where its first part is a local folder, a path was likely meant.
    folder = ""
    if path.parent != Path(".") and path.parent.is_dir():
        folder = f" (If you meant a local folder: {str(path.absolute())!r} does not exist.)"
    if trouble.kind == "offline":
        return (
            f"could not load model {model!r}: {trouble.describe('the model is')} (nothing usable in "
            f"{huggingface_hub.constants.HF_HUB_CACHE}).{folder} To fix it, unset {_offline_variable()} and "
            f"{_CONNECT}; or {_SET_MODEL}; or {_TRY_TINY}."
        )
    if trouble.kind in ("network", "connection"):
        return (
            f"could not download model {model!r} from the Hugging Face hub: {trouble.describe('')}, and the model is "
            f"not (fully) in the local cache yet.{folder} To fix it, {_CONNECT}; or {_SET_MODEL}; or {_TRY_TINY}."
        )
    if trouble.kind == "not_found":
        where = "" if endpoint == huggingface_hub.constants._HF_DEFAULT_ENDPOINT else f" at {endpoint}"
        return (
            f"no model {model!r} on the Hugging Face hub{where}; check the spelling (hub ids look like {_EXAMPLE_ID}), "
            f"or log in with `hf auth login` if it is private.{folder} Or {_SET_MODEL}; or {_TRY_TINY}."
        )
    if trouble.kind == "gated":
        return (
            f"model {model!r} on the Hugging Face hub is gated: accept its terms at {endpoint}/{model} while logged "
            f"in, then run `hf auth login` on this machine; or {_SET_MODEL}."
        )
    if trouble.kind == "missing_file":
        return (
            f"model {model!r} on the Hugging Face hub has no file {trouble.detail!r}, so it is not a Stable "
            f"Diffusion 1.x/2.x model in diffusers format; use a diffusers repo like {_EXAMPLE_ID}, or download "
            "the model's .safetensors/.ckpt checkpoint and set [generation] model to that file."
        )
    return (
        f"could not download model {model!r} from the Hugging Face hub: {trouble.describe('')}. Or {_SET_MODEL}; "
        f"or {_TRY_TINY}."
    )


def looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith((".", "~"))


def missing_path(model: str, path: Path, what: str) -> str:
    where = "" if path.is_absolute() else f" (looked for {str(path.absolute())!r})"
    return (
        f"model {what} {model!r} does not exist{where}; fix [generation] model in your config: point it at an "
        f"existing diffusers folder, a .safetensors/.ckpt file or a hub id like {_EXAMPLE_ID}. Or {_TRY_TINY}."
    )


def not_diffusers_folder(model: str, path: Path) -> str:
    text = (
        f"{model!r} is a folder but not a diffusers model (no model_index.json); point [generation] model at a "
        "diffusers folder, a .safetensors/.ckpt file or a hub id"
    )
    try:
        checkpoints = sorted(child for child in path.iterdir() if child.suffix in SINGLE_FILE_SUFFIXES)
    except OSError:
        return text
    if checkpoints:
        text += f" (this one holds a checkpoint: model = {str(checkpoints[0])!r} would load it)"
    return text


def other_family(index_file: Path) -> str | None:
    """What a diffusers folder holds when it is plainly not SD 1.x/2.x (SDXL, SD3, Flux…); None when it may be."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # diffusers will say what is wrong with it
    if not isinstance(index, dict):
        return None
    # SDXL loads into StableDiffusionPipeline without a word (it ignores text_encoder_2) and then fails
    # mid-job with a shape error; a transformer instead of a UNet is SD3, Flux, PixArt…
    if "unet" in index and not {"text_encoder_2", "transformer"} & index.keys():
        return None
    name = index.get("_class_name")
    return name if isinstance(name, str) and name else "different kind of"
