"""LoRAs and textual-inversion embeddings, read and used as the AUTOMATIC1111 web UI reads and uses them.

- `<lora:name:weight>` (or `<lora:name>`, weight 1) anywhere in a prompt names a LoRA file by its stem; the
  tags come out of the text before the text encoders see it. A LoRA is set on a diffusers pipeline for one
  job (peft adapters) and taken off after, so the next job draws exactly as if it had never been there.
- an embedding is used by writing its file's stem in the prompt as a word; it becomes new tokens of the
  tokenizer whose rows of the text encoder's token embeddings hold its vectors.
- "Lora hashes" and "TI hashes" of the infotext are A1111's short hashes of the files.

The prompt tags, file finding and hashes import no torch: the bot layer uses them to check a command.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from generation.files import safetensors_header, sha256
from storage.errors import EaselError

if TYPE_CHECKING:
    import torch

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
HASH_DIGITS = 12  # A1111's "shorthash"

_TAG = re.compile(r"<(lora|lyco):([^<>]*)>", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_PUNCTUATION = ",.;:!?)]"
# Keys that only a LoRA has, in the spellings of kohya/A1111 (lora_down), peft (lora_A) and old diffusers.
_LORA_KEY = re.compile(r"lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up")
_DOWN_KEY = re.compile(r"lora_down|lora_A|lora\.down")
# The cross-attention key/value projections' down weights: their input width is the text states' width.
_CROSS_KV = re.compile(r"attn2[._](?:processor[._])?to_[kv][._]")
# A text encoder's attention input projections: their input width is the encoder's hidden size.
_TEXT_QKV = re.compile(r"self_attn[._](?:[qkv]_proj|to_[qkv]_lora)[._]")
_TE2 = re.compile(r"^(?:lora_te2_|text_encoder_2\.|te2[._])")
_TE1 = re.compile(r"^(?:lora_te1?_|text_encoder\.|te1?[._])")
_CROSS_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# LyCORIS network types that diffusers cannot load, told by a component of their key names.
_LYCORIS = (("hada_", "LoHa"), ("lokr_", "LoKr"), ("oft_", "OFT"), ("boft_", "BOFT"), ("diff", "full-weight"),
            ("diff_b", "full-weight"), ("on_input", "(IA)³"), ("lora_mid", "LoCon (Tucker)"), ("a1", "GLoRA"),
            ("b1", "GLoRA"))


# peft warns at every LoRA after the first on a model; several at once is what apply_loras means to do.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)


class AddonError(EaselError):
    """A LoRA or embedding cannot be used: a bad tag, a file that is not one, or one for another model."""


@dataclass(frozen=True)
class LoraUse:
    """One `<lora:name:weight>` of a prompt."""

    name: str
    weight: float


# ---- prompt tags and file names (no torch) -------------------------------------------------------------


def split_loras(prompt: str) -> tuple[str, tuple[LoraUse, ...]]:
    """The prompt without its `<lora:…>` tags, and the LoRAs they name in order; no tags, the prompt unchanged."""
    pieces = _TAG.split(prompt)  # text, kind, body, text, kind, body, …, text
    if len(pieces) == 1:
        return prompt, ()
    uses: list[LoraUse] = []
    for kind, body in zip(pieces[1::3], pieces[2::3]):
        use = _lora_use(kind, body)
        if any(seen.name == use.name for seen in uses):
            raise AddonError(f"LoRA {use.name!r} is named twice in the prompt")
        uses.append(use)
    return _joined(pieces[::3]), tuple(uses)


def _lora_use(kind: str, body: str) -> LoraUse:
    tag = f"<{kind}:{body}>"
    if kind.lower() == "lyco":
        raise AddonError("`<lyco:…>` tags are not supported; use <lora:name:weight>")
    name, *numbers = (part.strip() for part in body.split(":"))
    if not name:
        raise AddonError(f"{tag} names no LoRA; write <lora:name:weight>")
    if len(numbers) > 1:
        raise AddonError(f"{tag} gives {len(numbers)} weights; easel takes one, as in <lora:{name}:0.8>")
    if not numbers:
        return LoraUse(name, 1.0)
    weight = float(numbers[0]) if _NUMBER.fullmatch(numbers[0]) else math.nan
    if not math.isfinite(weight):
        raise AddonError(f"the weight in {tag} is not a number like 0.8")
    return LoraUse(name, weight)


def _joined(texts: list[str]) -> str:
    """The text around removed tags, joined so a tag leaves no doubled, leading or trailing space behind."""
    out = texts[0]
    for text in texts[1:]:
        if not out or out[-1].isspace():
            text = text.lstrip()
            if not text or text[0] in _PUNCTUATION:
                out = out.rstrip()  # "a <lora:x>, b" reads "a, b"; a tag at the end leaves no space
        out += text
    return out


def find_files(folder: str | Path | None, suffixes: Iterable[str]) -> dict[str, Path]:
    """Name (the file's stem) → file, for the files with these suffixes anywhere under `folder`.

    Of two files with one stem the one nearer the top wins, then the first in sorted order, so a name always
    means the same file; hidden files and folders are skipped. No folder set, or none there: no files.
    """
    if not folder:
        return {}
    root = Path(folder).expanduser()
    if not root.is_dir():
        return {}
    wanted = {suffix.lower() for suffix in suffixes}
    files, seen = [], set()
    # Linked folders are followed (a LoRA folder often links to another UI's); each real folder once.
    for folder_path, folders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder_path)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        parts = Path(folder_path).relative_to(root).parts
        files += [(*parts, name) for name in names
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in wanted]
    found: dict[str, Path] = {}
    for parts in sorted(files, key=lambda parts: (len(parts), parts)):
        path = root.joinpath(*parts)
        if path.is_file():
            found.setdefault(path.stem, path)
    return found


def embedding_names_in(text: str, names: Iterable[str]) -> list[str]:
    """The embedding names written in `text` as words, in the order they first appear.

    As in A1111, a name counts where it stands as a word of its own, in any case ("style" is not in
    "lifestyle", "EasyNegative" is in "easynegative"); the longest name wins where names overlap.
    """
    pattern, canonical = _names_pattern(tuple(sorted(set(names))))
    found: list[str] = []
    if pattern is None:
        return found
    for match in pattern.finditer(text):
        name = _canonical(match.group(0), canonical)
        if name not in found:
            found.append(name)
    return found


@lru_cache(maxsize=32)
def _names_pattern(names: tuple[str, ...]) -> tuple[re.Pattern | None, dict[str, str]]:
    if not names:
        return None, {}
    # Longest first, so "bad-hands-5" is not read as "bad-hands" followed by "-5".
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    canonical = {name: name for name in names}
    for name in names:  # sorted: of two names differing only in case, the first is meant by other spellings
        canonical.setdefault(name.lower(), name)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE), canonical


def _canonical(written: str, canonical: dict[str, str]) -> str:
    return canonical.get(written) or canonical[written.lower()]


def expand_embeddings(text: str, added: dict[str, int]) -> str:
    """`text` with each embedding name (added: name → its number of vectors) written as its tokens, which the
    tokenizer reads as the embedding's ids; text without an added name comes back unchanged."""
    pattern, canonical = _names_pattern(tuple(sorted(added)))
    if pattern is None:
        return text

    def tokens(match: re.Match) -> str:
        name = _canonical(match.group(0), canonical)
        return " ".join(embedding_tokens(name, added[name]))

    return pattern.sub(tokens, text)


def embedding_tokens(name: str, count: int) -> list[str]:
    """The added tokens that stand for an embedding's `count` vectors.

    Bracketed and numbered with "#", they appear in no ordinary prompt (so adding them leaves every other
    prompt's ids as they were), hold none of the prompt parser's characters `\\()[]:`, and are not the
    "name", "name_1" … spelling that diffusers' own textual-inversion loader would expand a second time.
    """
    safe = re.sub(r"[^\w.\-]", "_", name)
    if safe != name:  # keep two names that differ only in unsafe characters apart
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return [f"<{safe}#{index}>" for index in range(count)]


_EMBEDDING_TOKEN = re.compile(r"<(.+)#(\d+)>")


def embedding_spans(tokenizer) -> dict[int, int]:
    """The id of each embedding's first token in this tokenizer → how many vectors (tokens) the embedding has:
    the prompt chunker keeps them together, as A1111 does."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    spans = {}
    for text, token_id in added.items():
        match = _EMBEDDING_TOKEN.fullmatch(text)
        if match and match.group(2) == "0":
            count = 1
            while f"<{match.group(1)}#{count}>" in added:
                count += 1
            spans[token_id] = count
    return spans


# ---- A1111's short hashes ------------------------------------------------------------------------------


def lora_short_hash(path: str | Path) -> str:
    """A1111's "Lora hashes" entry: of a .safetensors file, the kohya "addnet" hash (sha256 of the tensor data
    after the header, so editing metadata keeps it) or the one kohya wrote in the metadata as
    sshs_model_hash, which A1111 prefers; of any other file, the sha256 of the whole file. 12 hex digits."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        written = _metadata(path).get("sshs_model_hash")
        if isinstance(written, str) and written:
            return written[:HASH_DIGITS]
        return _sha256(path, addnet=True)[:HASH_DIGITS]
    return _sha256(path, addnet=False)[:HASH_DIGITS]


def embedding_short_hash(path: str | Path) -> str:
    """A1111's "TI hashes" entry: the first 12 hex digits of the whole file's sha256."""
    return _sha256(Path(path), addnet=False)[:HASH_DIGITS]


def _sha256(path: Path, addnet: bool) -> str:
    """The file's sha256 (with `addnet`, of what follows the safetensors header), hashed once per version."""
    try:
        return sha256(path, after_header=addnet)
    except OSError as error:
        raise AddonError(f"'{path.name}' cannot be read ({error.strerror or error})") from error


def _metadata(path: Path) -> dict:
    """A safetensors file's `__metadata__` (an empty dict where there is none or the header is not JSON)."""
    metadata = (safetensors_header(path) or {}).get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


@dataclass(frozen=True)
class _Shape:
    """A tensor as a safetensors header describes it: enough for the checks that read only names and shapes."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def lora_file_problem(path: Path, family: str) -> str | None:
    """What makes a .safetensors LoRA unusable with a model of `family` ("sd1", "sd2", "sdxl"), from its header
    alone (no torch, no weights read: the bot refuses such a tag before the job queues); None when nothing is
    plainly wrong. Other formats are checked when the job loads them."""
    from generation.models import FAMILY_LABELS

    if path.suffix.lower() != ".safetensors":
        return None
    header = safetensors_header(path)
    if header is None:
        return f"'{path.name}' is not a safetensors file (its header cannot be read)"
    shapes = {key: _Shape(tuple(value["shape"])) for key, value in header.items()
              if isinstance(value, dict) and isinstance(value.get("shape"), list)}
    kind = _lycoris_kind(shapes)
    if kind:
        return f"'{path.name}' is a LyCORIS {kind} file, which easel cannot load; use a LoRA"
    if not any(_LORA_KEY.search(key) for key in shapes):
        return f"'{path.name}' is not a LoRA (it has no LoRA weights)"
    made = lora_family(shapes)
    if made in FAMILY_LABELS and made != family:
        return f"LoRA '{path.stem}' is an {FAMILY_LABELS[made]} LoRA, and this model is {FAMILY_LABELS[family]}"
    return None


# ---- reading files (torch from here down) --------------------------------------------------------------


def _load_tensors(path: Path, what: str, safe_classes: Sequence[type] = ()) -> object:
    """The file's contents, CPU tensors: safetensors' dict, or what torch.load gives with weights_only (no code
    runs, only tensors and plain containers; `safe_classes` are allowed besides)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except OSError as error:
            raise AddonError(f"'{path.name}' cannot be read ({error.strerror or error})") from error
        except Exception as error:  # safetensors' own error: the header is not a safetensors header
            reason = _reason(error).removeprefix("Error while deserializing header: ")
            raise AddonError(f"'{path.name}' is not a safetensors file ({reason})") from error
    try:
        with torch.serialization.safe_globals(list(safe_classes)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise AddonError(f"'{path.name}' cannot be read ({error.strerror or error})") from error
    except Exception as error:
        if "Weights only load failed" in str(error):
            reason = "it holds Python objects besides tensors, which easel does not load"
        elif isinstance(error, (KeyError, IndexError, EOFError)) or not str(error):
            reason = "its contents are not saved tensors"
        else:
            reason = _reason(error)
        raise AddonError(f"'{path.name}' is not {what} file easel can read ({reason})") from error


def _reason(error: BaseException) -> str:
    """An exception's text as one short line for a user."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def read_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """A LoRA file's state dict (CPU tensors); AddonError, naming the file, for one that is not a LoRA
    diffusers can load."""
    import torch

    path = Path(path)
    data = _load_tensors(path, "a LoRA")
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # a training checkpoint around the weights
    state = {key: value for key, value in data.items() if isinstance(value, torch.Tensor)} if isinstance(
        data, dict) else {}
    kind = _lycoris_kind(state)
    if kind:
        raise AddonError(f"'{path.name}' is a LyCORIS {kind} file, which easel cannot load; use a LoRA")
    if not any(_LORA_KEY.search(key) for key in state):
        raise AddonError(f"'{path.name}' is not a LoRA (it has no LoRA weights)")
    return state


def _lycoris_kind(state: dict) -> str:
    for key in state:
        for part in key.split("."):
            for marker, kind in _LYCORIS:
                if part == marker or (marker.endswith("_") and part.startswith(marker)):
                    return kind
    return ""


def lora_family(state_dict: dict[str, torch.Tensor]) -> str:
    """"sdxl", "sd2", "sd1" as the LoRA's tensors tell (a second text encoder's keys, or the width of the text
    states its cross-attention reads: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL); "unknown" where they do not."""
    if any(_TE2.match(key) for key in state_dict):
        return "sdxl"
    return _CROSS_WIDTHS.get(_cross_width(state_dict), "unknown")


def _cross_width(state_dict: dict) -> int | None:
    for key, value in state_dict.items():
        if _CROSS_KV.search(key) and _DOWN_KEY.search(key) and value.ndim >= 2:
            return int(value.shape[1])
    return None


def _text_width(state_dict: dict, encoder: re.Pattern) -> int | None:
    for key, value in state_dict.items():
        if encoder.match(key) and _TEXT_QKV.search(key) and _DOWN_KEY.search(key) and value.ndim >= 2:
            return int(value.shape[1])
    return None


def check_lora_fits(state_dict: dict[str, torch.Tensor], pipe, name: str) -> None:
    """AddonError where the LoRA is plainly for another model family than the pipeline's (read from widths,
    before anything is loaded: diffusers would otherwise fail half-way, or load parts of it silently)."""
    xl_pipe = getattr(pipe, "text_encoder_2", None) is not None
    family = lora_family(state_dict)
    model_width = pipe.unet.config.cross_attention_dim
    if isinstance(model_width, (list, tuple)):  # a width per block (no SD model has two different ones)
        model_width = model_width[0]
    width = _cross_width(state_dict)
    if family == "sdxl" and not xl_pipe:
        widths = f" (cross-attention width {width}; this model's is {model_width})" if width else ""
        raise AddonError(f"LoRA {name!r} is an SDXL LoRA, and this model is not SDXL{widths}")
    if width is not None and width != model_width:
        raise AddonError(f"LoRA {name!r} was made for another model family "
                         f"(cross-attention width {width}; this model's is {model_width})")
    for encoder_name, keys in (("text_encoder", _TE1), ("text_encoder_2", _TE2)):
        encoder = getattr(pipe, encoder_name, None)
        lora_width = _text_width(state_dict, keys)
        if encoder is not None and lora_width is not None and lora_width != encoder.config.hidden_size:
            raise AddonError(f"LoRA {name!r} was made for another model family "
                             f"(text encoder width {lora_width}; this model's is {encoder.config.hidden_size})")


class LoraCache:
    """LoRA state dicts read from disk, so a LoRA used again is not read again (the `size` last used are kept;
    a file changed on disk is read anew)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._states: OrderedDict[tuple[str, int, int], dict] = OrderedDict()

    def state(self, path: str | Path) -> dict[str, torch.Tensor]:
        """The LoRA's state dict, a fresh dict of the kept tensors: diffusers' load_lora_weights pops the keys
        of the dict it is given, so every caller gets its own."""
        path = Path(path)
        try:
            stat = path.stat()
        except OSError as error:
            raise AddonError(f"'{path.name}' cannot be read ({error.strerror or error})") from error
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in self._states:
            self._states.move_to_end(key)
        else:
            for old in [old for old in self._states if old[0] == key[0]]:
                del self._states[old]  # an older version of the same file
            self._states[key] = read_lora(path)
            while len(self._states) > self.size:
                self._states.popitem(last=False)
        return dict(self._states[key])


def _adapter_modules(pipe, adapter: str) -> int:
    """How many layers of the UNet and text encoders hold `adapter`'s weights."""
    count = 0
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        if model is not None:
            count += sum(adapter in getattr(module, "lora_A", ()) for module in model.modules())
    return count


def apply_loras(pipe, uses: Sequence[tuple[LoraUse, Path]], cache: LoraCache) -> None:
    """Set these LoRAs, at their weights, on a diffusers SD/SDXL pipeline (peft adapters), in place of any set
    before. All are read and checked before any is loaded; on any error none stays loaded (AddonError)."""
    import torch
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise AddonError("LoRAs need the peft package (0.17 or newer) installed beside diffusers: pip install peft")
    if pipe.get_list_adapters():
        remove_loras(pipe)
    states = []
    for use, path in uses:
        state = cache.state(path)
        check_lora_fits(state, pipe, use.name)
        states.append(state)
    names, weights = [], []
    try:
        for index, ((use, path), state) in enumerate(zip(uses, states)):
            # Weight 0 is the picture without the LoRA. peft's weight 0 adds lora·0, exact in float32 on a
            # CPU, but an fp16 lora output that overflows would add inf·0 = NaN; not loading it is exact always.
            if use.weight == 0:
                continue
            adapter = f"easel{index}_" + re.sub(r"\W", "_", use.name)  # peft names hold no dots
            try:
                pipe.load_lora_weights(state, adapter_name=adapter)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # key or size mismatches, formats diffusers cannot convert
                raise AddonError(f"LoRA {use.name!r} ('{path.name}') does not fit this model: "
                                 f"{_reason(error)}") from error
            # diffusers drops keys for components the pipeline lacks (or another architecture's) silently.
            if not _adapter_modules(pipe, adapter):
                raise AddonError(f"LoRA {use.name!r}: none of its keys match this model")
            names.append(adapter)
            weights.append(use.weight)
        if names:
            pipe.set_adapters(names, adapter_weights=weights)
    except BaseException:
        remove_loras(pipe)
        raise


def remove_loras(pipe) -> None:
    """Take every LoRA off the pipeline: its layers are as they were before, so it draws as without them."""
    pipe.unload_lora_weights()


# ---- embeddings ----------------------------------------------------------------------------------------


def read_embedding(path: str | Path) -> dict[str, torch.Tensor]:
    """An embedding file's vectors, [n, width] float32 CPU tensors: {"": …} for SD 1.x/2.x files (A1111's .pt
    with string_to_param, diffusers' {token: tensor}, a file of one tensor such as emb_params), or
    {"clip_l": …, "clip_g": …} for SDXL files. AddonError, naming the file, for anything else."""
    import torch

    path = Path(path)
    # Old A1111/textual_inversion .pt files pickled string_to_param as a ParameterDict.
    data = _load_tensors(path, "an embedding", safe_classes=[torch.nn.ParameterDict])
    vectors: dict[str, torch.Tensor] = {}
    if isinstance(data, dict) and "string_to_param" in data:
        params = data["string_to_param"]
        params = dict(getattr(params, "_parameters", params))  # a ParameterDict keeps them there
        if len(params) == 1:
            vectors[""] = next(iter(params.values()))
    elif isinstance(data, dict) and "clip_l" in data and "clip_g" in data:
        vectors = {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    elif isinstance(data, dict):
        tensors = [value for value in data.values() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            vectors[""] = tensors[0]
    if not vectors or not all(isinstance(value, torch.Tensor) for value in vectors.values()):
        raise AddonError(f"'{path.name}' is not a textual-inversion embedding")
    vectors = {key: (value[None] if value.ndim == 1 else value).detach().float() for key, value in vectors.items()}
    counts = {value.shape[0] for value in vectors.values()}
    if any(value.ndim != 2 or value.shape[0] == 0 for value in vectors.values()) or len(counts) != 1:
        raise AddonError(f"'{path.name}' is not a textual-inversion embedding (its vectors have the shapes "
                         f"{', '.join(str(list(value.shape)) for value in vectors.values())})")
    return vectors


def embeddings_for(pipe, vectors: dict[str, torch.Tensor] | None = None, name: str = "") -> list[tuple]:
    """(tokenizer, text encoder, key of the embedding's vectors for it) for each text encoder of the pipeline:
    SD 1.x/2.x one ("" vectors), SDXL two ("clip_l", "clip_g"). With `vectors`, AddonError where the
    embedding has none for an encoder (an SD 1.x embedding on SDXL, or the other way round)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None), "clip_l"),
                 (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")]
        pairs = [pair for pair in pairs if pair[0] is not None and pair[1] is not None]  # a refiner has one
    else:
        pairs = [(pipe.tokenizer, pipe.text_encoder, "")]
    if vectors is not None:
        for _, _, key in pairs:
            if key not in vectors:
                if key:
                    raise AddonError(f"embedding {name!r} is not for SDXL; SDXL needs one with clip_l and clip_g "
                                     "vectors")
                raise AddonError(f"embedding {name!r} is for SDXL, and this model is not SDXL")
    return pairs


def add_embedding(tokenizer, text_encoder, name: str, vectors: torch.Tensor) -> int:
    """Make `name` an embedding of this tokenizer and text encoder: new tokens (embedding_tokens) whose rows
    of the encoder's token embeddings hold `vectors` [n, width]; returns n, for expand_embeddings.

    Adding a name again adds no tokens; its rows are written again. A tokenizer shared by two encoders gets
    the tokens once, each encoder its rows."""
    import torch
    from transformers import AddedToken

    table = text_encoder.get_input_embeddings()
    width, hidden = int(vectors.shape[-1]), int(table.weight.shape[1])
    if width != hidden:
        raise AddonError(f"embedding {name!r} is for another model family (width {width}; "
                         f"this model's text encoder {hidden})")
    tokens = embedding_tokens(name, int(vectors.shape[0]))
    vocab = tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        # normalized=False: matched on the text as written, before CLIP's lower-casing.
        tokenizer.add_tokens([AddedToken(token, normalized=False) for token in missing])
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if max(ids) >= table.weight.shape[0]:
        # mean_resizing would draw the new rows from the global RNG; they are written over anyway.
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = text_encoder.get_input_embeddings()
    with torch.no_grad():
        table.weight[ids] = vectors.to(device=table.weight.device, dtype=table.weight.dtype)
    _pool_at_eos(tokenizer, text_encoder)
    return len(tokens)


def _pool_at_eos(tokenizer, text_encoder) -> None:
    """Make the encoder pool at the EOS token, not at the highest id: the two are the same without added tokens.

    Old CLIP configs (SD 1.5's and SDXL's encoders have eos_token_id 2) make transformers take the pooled
    text at the highest token id, which was EOS until tokens were added after it; with an embedding in the
    prompt it would pool at the embedding, and SDXL reads that pooled text. Where EOS is the tokenizer's
    highest own id, the first EOS is where the highest id was, so prompts without embeddings pool as before.
    """
    eos = tokenizer.eos_token_id
    if eos is None or eos == 2 or eos != tokenizer.vocab_size - 1:
        return
    for module in text_encoder.modules():
        if getattr(module, "eos_token_id", None) == 2:
            module.eos_token_id = eos
