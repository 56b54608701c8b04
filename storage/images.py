"""PNG files on disk: outputs with AUTOMATIC1111-style infotext, and the inputs people upload."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from storage.errors import EaselError
from storage.records import JobKind, JobParams, RunInfo, is_hub_id

# Our scheduler keys → the sampler names AUTOMATIC1111 writes, so its PNG Info tab reads our files.
SAMPLER_NAMES = {
    "ddim": "DDIM",
    "pndm": "PLMS",
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "lms": "LMS",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "unipc": "UniPC",
}


class BadImageError(EaselError):
    """An uploaded file is not an image we can use."""


def infotext(params: JobParams, seed: int, run: RunInfo | None) -> str:
    """The `parameters` text chunk: prompt, optional negative prompt, then one line of settings."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    fields = [
        ("Steps", params.steps),
        ("Sampler", SAMPLER_NAMES.get(params.scheduler, params.scheduler)),
        ("CFG scale", f"{params.cfg:g}"),
        ("Seed", seed),
        ("Size", f"{params.width}x{params.height}"),
    ]
    if run is not None:
        if run.model_hash:
            fields.append(("Model hash", run.model_hash[:10]))
        fields.append(("Model", _model_name(run.model)))
    if params.kind is JobKind.IMG2IMG and params.strength is not None:
        fields.append(("Denoising strength", f"{params.strength:g}"))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def _model_name(model: str) -> str:
    # A1111 writes the checkpoint's name, not its path; keep hub ids whole.
    path = Path(model)
    if path.suffix in (".safetensors", ".ckpt"):
        return path.stem
    if is_hub_id(model):
        return model  # "org/name": the org is part of the name (runwayml/… vs stable-diffusion-v1-5/…)
    return model.rstrip("/").split("/")[-1]


def read_parameters(path: Path) -> str | None:
    """The `parameters` chunk of a PNG, or None."""
    with Image.open(path) as image:
        return image.info.get("parameters")


def open_upload(data: bytes, max_bytes: int) -> Image.Image:
    """Decode an uploaded image, or say plainly why it cannot be used."""
    if len(data) > max_bytes:
        raise BadImageError(f"the image is {_size(len(data))}; the limit is {_size(max_bytes)}")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadImageError("the attached file is not an image (PNG, JPEG or WebP expected)") from exc
    return image.convert("RGB")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"


class ImageStore:
    """Owns the files under data_dir: images/<day>/<job>-<k>.png and inputs/<sha256>.png."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.outputs = self.root / "images"
        self.inputs = self.root / "inputs"

    def save_input(self, image: Image.Image) -> str:
        """Keep an uploaded image (as PNG) so its job survives restarts and reruns; returns its sha256."""
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        path = self.input_path(digest)
        if not path.exists():
            self.inputs.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
        return digest

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
    # A crash mid-write must never leave a half PNG where history says a whole one is.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
