"""PNG files on disk: outputs with AUTOMATIC1111-style infotext, and the inputs people upload."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from storage.errors import EaselError
from storage.records import Img2ImgParams, JobParams, RunInfo, is_hub_id

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
    "lms": ("LMS", "Uniform"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
    "dpmpp_2m_karras": ("DPM++ 2M Karras", "Karras"),
    "unipc": ("UniPC", "Automatic"),
}


class BadImageError(EaselError):
    """An uploaded file is not an image we can use."""


NOT_AN_IMAGE = "the attached file is not an image (PNG, JPEG or WebP expected)"
# Decoded, 64 MP is 192 MB of RGB; it lets a full-resolution 48/50 MP phone photo through and stays
# under Pillow's own decompression-bomb warning (89 MP).
MAX_UPLOAD_PIXELS = 64_000_000


def infotext(params: JobParams, seed: int, run: RunInfo | None) -> str:
    """The `parameters` text chunk in AUTOMATIC1111's format: prompt, negative prompt, one line of settings."""
    # A1111's reader takes the last line as the settings and the lines from one starting with
    # "Negative prompt:" on as the negative prompt, so newlines inside prompts survive; a prompt line
    # that itself starts with "Negative prompt:" cannot be told apart (A1111's own files share this).
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    sampler, schedule = SAMPLER_NAMES.get(params.scheduler, (params.scheduler, None))
    fields: list[tuple[str, object]] = [
        ("Steps", params.steps),
        ("Sampler", sampler),
        ("Schedule type", schedule),
        ("CFG scale", plain_number(params.cfg)),
        ("Seed", seed),
        ("Size", f"{params.width}x{params.height}"),
    ]
    if run is not None:
        if run.model_hash:
            fields.append(("Model hash", run.model_hash[:10]))
        fields.append(("Model", _model_name(run.model)))
    if isinstance(params, Img2ImgParams):
        fields.append(("Denoising strength", plain_number(params.strength)))
    # Our initial noise comes from a CPU torch.Generator per image; A1111 defaults to GPU noise.
    fields.append(("RNG", "CPU"))
    lines.append(", ".join(f"{key}: {_quote(str(value))}" for key, value in fields if value is not None))
    return "\n".join(lines)


def _quote(value: str) -> str:
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


def _model_name(model: str) -> str:
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


def open_upload(
    data: bytes, max_bytes: int, max_pixels: int = MAX_UPLOAD_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode an uploaded image upright, at most max_side on a side, or say plainly why it cannot be used."""
    if len(data) > max_bytes:
        raise BadImageError(f"the image is {_size(len(data))}; the limit is {_size(max_bytes)}")
    try:
        image = Image.open(io.BytesIO(data))  # lazy: reads the header, so the size is known before decoding
        width, height = image.size
        if width * height > max_pixels:
            # A small file can declare a huge canvas (a "decompression bomb"): refuse before allocating it.
            raise BadImageError(f"the image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
        if max_side is not None:
            image.draft("RGB", (max_side, max_side))  # a big JPEG decodes at 1/2, 1/4 or 1/8 size, much quicker
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # phones store photos sideways plus an orientation tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Sizes far over Pillow's own limit are refused inside Image.open, before we learn the size.
        raise BadImageError(
            f"the image is over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is {max_pixels:,} pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadImageError(NOT_AN_IMAGE) from exc
    image = image.convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        # The engine resizes to the job's size anyway; a smaller input is quicker to store and to load.
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"


class ImageStore:
    """Owns the files under data_dir: images/<day>/<job>-<k>.png and inputs/<sha256>.png."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.outputs = self.root / "images"
        self.inputs = self.root / "inputs"

    def add_input(self, image: Image.Image) -> tuple[str, bool]:
        """Keep an uploaded image (as PNG) so its job survives restarts and reruns.

        Returns its sha256 and whether this call wrote the file (False: the same image was already kept).
        """
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = self.input_path(digest)
        if path.exists():
            return digest, False
        self.inputs.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        return digest, True

    def discard_input(self, sha256: str) -> None:
        """Remove an input no job refers to (one whose job was refused after it was saved)."""
        self.input_path(sha256).unlink(missing_ok=True)

    def input_path(self, sha256: str) -> Path:
        return self.inputs / f"{sha256}.png"

    def load_input(self, sha256: str) -> Image.Image:
        path = self.input_path(sha256)
        if not path.exists():
            raise EaselError(f"the input image of this job ({sha256[:12]}) is no longer on disk")
        with Image.open(path) as image:
            return image.convert("RGB")

    def save_output(self, job_id: int, index: int, image: Image.Image, text: str) -> Path:
        """Write one result PNG with its infotext; returns its path."""
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        folder = self.outputs / day
        folder.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        path = folder / f"{job_id}-{index}.png"
        _write_atomically(path, buffer.getvalue())
        return path


def _write_atomically(path: Path, data: bytes) -> None:
    # A crash mid-write must never leave a half PNG where history says a whole one is. The temporary
    # name is unique to this write: two jobs saving the same input at once must not share one. (Not
    # mkstemp: its files are private (0600), and these are ordinary files the user may want to share.)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
