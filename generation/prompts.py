"""AUTOMATIC1111-style prompts turned into `prompt_embeds` for diffusers' Stable Diffusion 1.x/2.x pipelines.

Supported syntax, read as the A1111 web UI reads it:

- `(words)` multiplies attention by 1.1, `[words]` divides it by 1.1, `(words:1.5)` multiplies it by 1.5
  (the number after the last colon); nesting multiplies, so `((words))` is 1.21.
- `\\(` `\\)` `\\[` `\\]` `\\\\` are literal characters; a backslash before anything else is dropped.
- an unclosed `(` or `[` applies to the rest of the prompt; a `)` or `]` with nothing open is plain text.
- `BREAK` (capitals, a word on its own) ends the current 75-token chunk; the rest starts a new one.
- prompts of any length: tokens go into chunks of 75, each encoded on its own as BOS + 75 + EOS and
  concatenated; a chunk that fills up breaks after a comma among its last 20 tokens instead, and an
  embedding's vectors that would not fit in what is left of a chunk start the next one together.

SDXL's two text encoders read the same syntax: each encodes the same chunks, their states are joined,
and the pooled text comes from the second encoder's first chunk (as A1111 does).

Not supported, read as plain text: prompt editing `[a:b:0.5]`, alternation `[a|b]`, `AND`. (`<lora:…>` tags are
taken out before the text gets here: generation/addons.py.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation.addons import embedding_spans
from storage.errors import EaselError

# torch is imported where it is used, so the parser stays importable (and usable to check a prompt up
# front) from layers that must not load torch.
if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
COMMA_BACKTRACK = 20  # A1111's default "comma padding backtrack"
BREAK = ("BREAK", -1.0)  # how parse_attention shows a chunk break, as A1111 does
# The emphasis mean is restored only when it is at least this fraction of the embeddings' mean magnitude;
# float32 rounding leaves a zero mean at ~1e-7 of it, so the factor is then known to better than 1e-4.
MEAN_RESTORE_MIN = 1e-3

_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")
_SPECIAL = frozenset("\\()[]:")
_ESCAPABLE = frozenset("()[]\\")


class PromptError(EaselError):
    """The prompt's emphasis syntax cannot be read; the text says where."""


@dataclass
class _Run:
    text: str
    weight: float = 1.0
    is_break: bool = False


@dataclass(frozen=True)
class Chunk:
    """One text-encoder window: token ids and their weights, both tokenizer.model_max_length long."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The prompt as runs of (text, weight); a BREAK shows as ("BREAK", -1.0)."""
    return [BREAK if run.is_break else (run.text, run.weight) for run in _parse(text)]


def _parse(text: str) -> list[_Run]:
    runs: list[_Run] = []
    open_round: list[int] = []  # where in `runs` each unclosed "(" began
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        # A break is a position, not words: A1111 scales its -1 marker too, turning `(a BREAK b)` into the
        # literal word BREAK at weight -1.1; we keep it a break.
        for run in runs[start:]:
            if not run.is_break:
                run.weight *= factor

    def add_text(piece: str) -> None:
        for n, part in enumerate(_BREAK_WORD.split(piece)):
            if n:
                runs.append(_Run("", is_break=True))
            if part:
                runs.append(_Run(part))

    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped and escaped in _ESCAPABLE:
                runs.append(_Run(escaped))
                i += 2
            else:
                i += 1  # A1111 drops a backslash that escapes nothing
        elif char == "(":
            open_round.append(len(runs))
            i += 1
        elif char == "[":
            open_square.append(len(runs))
            i += 1
        elif char == ")" and open_round:
            scale(open_round.pop(), ROUND_FACTOR)
            i += 1
        elif char == "]" and open_square:
            scale(open_square.pop(), SQUARE_FACTOR)
            i += 1
        elif char == ":" and open_round and (match := _WEIGHT.match(text, i)):
            scale(open_round.pop(), _weight(match.group(1), text))
            i = match.end()
        elif char in _SPECIAL:  # a stray closer or a colon that starts no weight: plain text
            add_text(char)
            i += 1
        else:
            end = i
            while end < len(text) and text[end] not in _SPECIAL:
                end += 1
            add_text(text[i:end])
            i = end
    # Unclosed brackets reach to the end, rounds first, in the order opened (as A1111, so floats match).
    for start in open_round:
        scale(start, ROUND_FACTOR)
    for start in open_square:
        scale(start, SQUARE_FACTOR)
    return _merged(runs)


def _merged(runs: list[_Run]) -> list[_Run]:
    """Neighbouring runs of the same weight as one (a BREAK stays on its own); one empty run for no runs."""
    merged: list[_Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if last and not last.is_break and not run.is_break and last.weight == run.weight:
            last.text += run.text
        else:
            merged.append(run)
    return merged or [_Run("")]


def _weight(number: str, prompt: str) -> float:
    # A1111 fails with a bare ValueError here; say what is wrong instead.
    value = float(number) if _NUMBER.fullmatch(number) else math.nan
    if not math.isfinite(value):
        raise PromptError(f"the weight {number!r} in the prompt {_clip(prompt)!r} is not a number like 1.5")
    return value


def _clip(prompt: str) -> str:
    return prompt if len(prompt) <= 80 else prompt[:77] + "..."


def chunk_prompt(tokenizer: CLIPTokenizer, prompt: str, comma_backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """Tokenize a prompt into weighted chunks of 75 tokens (BOS + tokens + EOS + padding each)."""
    size = tokenizer.model_max_length - 2
    runs = _parse(prompt)
    texts = [run.text for run in runs if not run.is_break]
    # Each run is tokenized on its own, as A1111 does; verbose=False because a long run is the point here.
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids if texts else []
    tokenized = iter(ids)
    comma = tokenizer.get_vocab().get(",</w>")
    spans = embedding_spans(tokenizer)  # an embedding's vectors stay in one chunk

    chunks: list[Chunk] = []
    current: list[tuple[int, float]] = []
    last_comma = -1  # index in `current` of its latest comma, -1 when none

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(_window(tokenizer, current, size))
        current, last_comma = [], -1

    for run in runs:
        if run.is_break:
            close()
            continue
        for token in next(tokenized):
            span = spans.get(token, 0)
            if span and len(current) + span > size >= span:
                close()  # as A1111: an embedding that would not fit starts the next chunk
            if token == comma:
                last_comma = len(current)
            elif len(current) == size and last_comma >= 0 and size - last_comma <= comma_backtrack:
                # Cutting mid-phrase splits its meaning between chunks: end at the comma, carry the phrase over.
                carried = current[last_comma + 1 :]
                del current[last_comma + 1 :]
                close()
                current = carried
            if len(current) == size:
                close()
            current.append((token, run.weight))
    if current or not chunks:
        close()
    return chunks


def _window(tokenizer: CLIPTokenizer, tokens: list[tuple[int, float]], size: int) -> Chunk:
    # BOS, tokens, EOS, then pad: the layout of tokenizer(..., padding="max_length"), so a short plain prompt
    # gets exactly the ids diffusers would use (SD 2.x pads with "!" after the EOS; A1111 does the same).
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padding = size - len(tokens)
    ids = [tokenizer.bos_token_id, *(token for token, _ in tokens), tokenizer.eos_token_id, *[pad] * padding]
    weights = [1.0, *(weight for _, weight in tokens), 1.0, *[1.0] * padding]
    return Chunk(tuple(ids), tuple(weights))


def encode_chunks(
    text_encoder: CLIPTextModel,
    chunks: list[Chunk],
    device: torch.device | str,
    dtype: torch.dtype,
    clip_skip: int | None = None,
    penultimate: bool = False,
) -> torch.Tensor:
    """Encode each chunk, apply its weights with A1111's mean restore, and join them: [1, 77·k, hidden].
    `penultimate`: the layer before the last, without the final norm (what SDXL's UNet was trained on)."""
    import torch

    # Offload hooks move the encoder to the execution device per call and expect inputs there (as diffusers
    # passes them); an encoder kept plainly on some device (e.g. the CPU) wants its inputs at home.
    home = torch.device(device) if hasattr(text_encoder, "_hf_hook") else text_encoder.device
    use_mask = getattr(text_encoder.config, "use_attention_mask", False)
    parts = []
    with torch.no_grad():
        # One forward per chunk at batch size 1, as diffusers encodes a prompt, so a one-chunk prompt gives
        # bit-identical embeddings (batched matmuls may round differently).
        for chunk in chunks:
            ids = torch.tensor([chunk.ids], dtype=torch.long, device=home)
            mask = None
            if use_mask:
                mask = torch.zeros_like(ids)
                mask[0, : chunk.ids.index(text_encoder.config.eos_token_id, 1) + 1] = 1
            if penultimate:
                hidden = text_encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
            elif clip_skip is None:
                hidden = text_encoder(ids, attention_mask=mask)[0]
            else:
                # diffusers' clip_skip: 1 is the penultimate layer (A1111's "Clip skip: 2"), through the final norm.
                # transformers 5 dropped CLIPTextModel.text_model (diffusers' own clip_skip breaks on it); 4 has it.
                states = text_encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
                final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
                hidden = final_norm(states[-(clip_skip + 1)])
            parts.append(_apply_weights(hidden, chunk.weights))
    return torch.cat(parts, dim=1).to(device=device, dtype=dtype)


def _apply_weights(hidden: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    import torch

    if all(weight == 1.0 for weight in weights):
        return hidden  # untouched, so unweighted prompts match diffusers exactly
    # In float32: a mean over 77×768 half-precision values loses the digits the rescale depends on.
    original = hidden.float()
    scale = torch.tensor(weights, dtype=torch.float32, device=hidden.device)[None, :, None]
    weighted = original * scale
    # A1111's "restore mean": weighting shifts the chunk's overall magnitude, which the UNet reads as a
    # different prompt; rescaling to the old mean keeps emphasis relative.
    old_mean, new_mean = original.mean(), weighted.mean()
    # A mean that is zero up to rounding (an encoder whose final norm has no bias, like the tiny test model)
    # has no level to restore: the factor would be rounding noise that differs between CPUs (2.6 on one,
    # -4.5 on another). A1111 divides anyway; we keep the weights as they are.
    zero = MEAN_RESTORE_MIN * original.abs().mean()
    if old_mean.abs() > zero and new_mean.abs() > zero:
        weighted = weighted * (old_mean / new_mean)
    return weighted.to(hidden.dtype)


def encode_prompts(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    negative_prompt: str,
    device: torch.device | str,
    dtype: torch.dtype,
    clip_skip: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, negative_prompt_embeds) for the pipeline, both [1, 77·k, hidden] with the same k."""
    positive = chunk_prompt(tokenizer, prompt)
    negative = chunk_prompt(tokenizer, negative_prompt)
    # Guidance concatenates both into one batch, so their lengths must agree; A1111 pads with the empty
    # prompt, which carries no meaning of its own.
    empty = chunk_prompt(tokenizer, "")[0]
    positive += [empty] * (len(negative) - len(positive))
    negative += [empty] * (len(positive) - len(negative))
    return (
        encode_chunks(text_encoder, positive, device, dtype, clip_skip),
        encode_chunks(text_encoder, negative, device, dtype, clip_skip),
    )


def encode_prompts_xl(pipe, prompt: str, negative_prompt: str, device: torch.device | str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The four embeddings an SDXL pipeline takes, from A1111-syntax prompts: both encoders' penultimate
    states joined ([1, 77·k, 768 + 1280]) and the second encoder's pooled, projected text of the first chunk."""
    import torch

    # A refiner has only the second encoder: its UNet reads that one's states alone.
    pairs = [(tokenizer, encoder) for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder),
                                                              (pipe.tokenizer_2, pipe.text_encoder_2)) if encoder is not None]
    chunked = []
    for tokenizer, _ in pairs:
        positive, negative = chunk_prompt(tokenizer, prompt), chunk_prompt(tokenizer, negative_prompt)
        chunked.append((tokenizer, positive, negative))
    length = max(len(chunks) for _, positive, negative in chunked for chunks in (positive, negative))
    embeds: dict[str, list] = {"prompt_embeds": [], "negative_prompt_embeds": []}
    pooled = {}
    for (tokenizer, positive, negative), (_, encoder) in zip(chunked, pairs):
        empty = chunk_prompt(tokenizer, "")[0]
        for key, chunks in (("prompt_embeds", positive), ("negative_prompt_embeds", negative)):
            chunks = chunks + [empty] * (length - len(chunks))  # guidance batches both: equal lengths
            embeds[key].append(encode_chunks(encoder, chunks, device, dtype, penultimate=True))
            if encoder is pipe.text_encoder_2:
                pooled[key] = _pooled(encoder, chunks[0], device, dtype)
    out = {key: torch.cat(parts, dim=-1) for key, parts in embeds.items()}
    out["pooled_prompt_embeds"] = pooled["prompt_embeds"]
    out["negative_pooled_prompt_embeds"] = pooled["negative_prompt_embeds"]
    if not negative_prompt and pipe.config.get("force_zeros_for_empty_prompt", False):
        # SDXL base draws an empty negative prompt as zeros, not as the encoded empty text (as diffusers does).
        out["negative_prompt_embeds"] = torch.zeros_like(out["negative_prompt_embeds"])
        out["negative_pooled_prompt_embeds"] = torch.zeros_like(out["negative_pooled_prompt_embeds"])
    return out


def _pooled(text_encoder, chunk: Chunk, device, dtype) -> torch.Tensor:
    """The projected, pooled text of one chunk (CLIPTextModelWithProjection's text_embeds): [1, projection]."""
    import torch

    home = torch.device(device) if hasattr(text_encoder, "_hf_hook") else text_encoder.device
    with torch.no_grad():
        output = text_encoder(torch.tensor([chunk.ids], dtype=torch.long, device=home))
    return output[0].to(device=device, dtype=dtype)
