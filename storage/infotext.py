"""AUTOMATIC1111-style infotext: the `parameters` text chunk of every result PNG, and how it writes numbers and names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from storage.records import RunInfo, is_hub_id

if TYPE_CHECKING:
    from storage.params import JobParams


# Our scheduler keys → (Sampler, Schedule type) as AUTOMATIC1111 writes them, so its PNG Info tab reads
# our files and reproduces the schedule. Since A1111 1.9 the sigma schedule is its own field and a bare
# "DPM++ 2M" means *Karras* there (its default for that sampler), so a uniform schedule is spelled out.
# The Karras variant keeps the combined "DPM++ 2M Karras" name: A1111 before 1.9 knows only that name,
# and 1.9+ splits the " Karras" suffix off into the schedule (sd_samplers.get_sampler_and_scheduler).
# DDIM, PLMS and UniPC are A1111 "timestep" samplers that ignore the field; it writes Automatic for them.
SAMPLER_NAMES = {
    "ddim": ("DDIM", "Automatic"),
    "pndm": ("PLMS", "Automatic"),
    "euler": ("Euler", "Uniform"),
    "euler_a": ("Euler a", "Uniform"),
    "heun": ("Heun", "Uniform"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
    "dpmpp_2m_karras": ("DPM++ 2M Karras", "Karras"),
    "unipc": ("UniPC", "Automatic"),
}


def infotext(params: JobParams, seed: int, run: RunInfo | None, extra: list[tuple[str, object]] = ()) -> str:
    """The `parameters` text chunk in AUTOMATIC1111's format: the kind's heading lines, then one line of settings."""
    # A1111's reader takes the last line as the settings and the lines from one starting with
    # "Negative prompt:" on as the negative prompt, so newlines inside prompts survive; a prompt line
    # that itself starts with "Negative prompt:" cannot be told apart (A1111's own files share this).
    lines, fields = params.infotext(seed, run)
    fields = [*fields, *extra]
    return "\n".join([*lines, ", ".join(f"{key}: {quote(str(value))}" for key, value in fields if value is not None)])


def quote(value: str) -> str:
    # A1111's infotext_utils.quote: a value with "," ":" or a newline becomes a JSON string (non-ASCII
    # kept), which its reader's pattern takes whole and json.loads back. We also quote a '"', which
    # A1111's reader accepts the same way; unquoted, a value like "x" would come back as x.
    if any(mark in value for mark in ',:"\n'):
        return json.dumps(value, ensure_ascii=False)
    return value


def plain_number(value: float) -> str:
    """A number as people type it: whole ones without ".0", others at full precision (7.1234567, not 7.12346)."""
    # repr is the shortest text that reads back as the same float.
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


_CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def model_name(model: str) -> str:
    # A1111 writes the checkpoint's file name without its extension, never its path. Paths may come
    # from Windows ("C:\\models\\dream.safetensors") even when this runs on Linux, so both separators
    # count. Hub ids stay whole: the org is part of the name (runwayml/… vs stable-diffusion-v1-5/…).
    # A relative folder such as "models/sd15" looks like a hub id; it is a folder on disk, so only its name.
    name = re.split(r"[\\/]", model.rstrip("/\\"))[-1]
    if name.lower().endswith(_CHECKPOINT_SUFFIXES):
        return name.rsplit(".", 1)[0]
    if is_hub_id(model) and not Path(model).expanduser().is_dir():
        return model
    return name


def read_parameters(path: Path) -> str | None:
    """The `parameters` chunk of a PNG, or None."""
    with Image.open(path) as image:
        return image.info.get("parameters")

