"""Photos → pix2pix training pairs: a line drawing of each photo (A) beside the photo itself (B).

A pair is stored as the reference pix2pix "aligned" layout (pytorch-CycleGAN-and-pix2pix's
`--dataset_mode aligned`): one image 2·size wide, edges on the left, photo on the right. The edges go
through `pix2pix_input`, the very preprocessing `/sketch --mode pix2pix` applies to a user's drawing,
so the model learns from lines that look like the ones it will be given.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.pix2pix import UnetGenerator
from generation.scribble.inputs import pix2pix_input
from generation.training.patchgan import PatchDiscriminator
from storage.errors import EaselError

Method = Literal["canny", "xdog"]
METHODS: tuple[Method, ...] = ("canny", "xdog")
SIZE = 256
MIN_PHOTOS = 8
MANIFEST = "pairs.json"
CONTACT_SHEET = "contact-sheet.png"
# A photo whose drawing has fewer dark pixels than this share of the square has nothing to learn from.
MIN_LINE_SHARE = 0.001
# Canny on the colour photo blurred by this sigma (px at 256²): faces keep their eyes and mouths, wood grain
# and fur mostly go, as in a person's drawing.
CANNY_BLUR = 1.2
CANNY_SPREAD = 0.33  # thresholds at (1 ∓ spread) × the median grey, the usual automatic Canny
# XDoG (Winnemöller et al. 2012): sharpened difference of Gaussians, soft threshold.
XDOG_SIGMA, XDOG_K, XDOG_P, XDOG_EPSILON, XDOG_PHI = 1.0, 1.6, 20.0, 0.0, 10.0
# Room kept free besides the pairs and the model files: sample sheets, the loss plot, the file system.
DISK_MARGIN = 64 * 1024**2


class TrainingInputError(EaselError):
    """The photos, the pair set or the training options cannot be used; the text says what to change."""


@dataclass(frozen=True)
class Skipped:
    """A file of the photos folder that was not used, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class PairSet:
    """A built set of aligned pairs: training and held-out files, what was skipped, how the edges were drawn."""

    root: Path
    train: tuple[Path, ...]
    held_out: tuple[Path, ...]
    skipped: tuple[Skipped, ...]
    size: int
    method: Method
    fingerprint: str  # sha256 of the pair files, so a checkpoint knows the set it was trained on
    train_sources: tuple[str, ...] = ()  # the photo each training pair was made from, by file name
    held_out_sources: tuple[str, ...] = ()

    @property
    def contact_sheet(self) -> Path:
        return self.root / CONTACT_SHEET


def held_out_count(n: int) -> int:
    """How many of n usable photos are kept out of training to check the model: a tenth, at least 2."""
    return max(2, round(n * 0.1))


def held_out_indices(n: int) -> list[int]:
    """Which of n photos (sorted by file name) are held out: the middle one of each of k equal runs."""
    k = held_out_count(n)
    return [(2 * i + 1) * n // (2 * k) for i in range(k)]


def prepare_photo(image: Image.Image, size: int = SIZE) -> Image.Image:
    """The photo upright (EXIF), RGB with transparency on white, centre-cropped square, size×size (Lanczos)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit or float greys: Pillow's own conversion clips them to 255 (all white), so scale them down.
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        image = Image.fromarray((np.clip(grey / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        rgb = image.convert("RGB")
    return ImageOps.fit(rgb, (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def line_drawing(photo: Image.Image, method: Method = "canny") -> Image.Image:
    """Thin dark lines on white (mode L) drawn from a photo's edges, as a person might draw it."""
    grey = np.asarray(photo.convert("L"))
    if method == "canny":
        blurred = cv2.GaussianBlur(np.asarray(photo.convert("RGB")), (0, 0), CANNY_BLUR)
        median = float(np.median(cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY)))
        # Floors keep a dark photo's sensor noise out; the ceiling keeps a bright one from losing all but
        # its very strongest edges.
        low = int(np.clip((1.0 - CANNY_SPREAD) * median, 10, 100))
        high = int(np.clip((1.0 + CANNY_SPREAD) * median, 30, 200))
        # On the colour image, OpenCV takes each pixel's strongest channel gradient: a purple cup on a
        # grey-green table has an edge even where the two are equally bright.
        edges = cv2.Canny(blurred, low, high, L2gradient=True)
        return Image.fromarray(255 - edges, "L")
    if method == "xdog":
        g = grey.astype(np.float32) / 255.0
        near = cv2.GaussianBlur(g, (0, 0), XDOG_SIGMA)
        far = cv2.GaussianBlur(g, (0, 0), XDOG_SIGMA * XDOG_K)
        sharpened = (1.0 + XDOG_P) * near - XDOG_P * far
        soft = np.where(sharpened >= XDOG_EPSILON, 1.0, 1.0 + np.tanh(XDOG_PHI * (sharpened - XDOG_EPSILON)))
        return Image.fromarray((np.clip(soft, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
    raise TrainingInputError(f"edge method must be one of {', '.join(METHODS)}, got {method!r}")


def aligned_pair(photo: Image.Image, size: int = SIZE, method: Method = "canny") -> Image.Image:
    """One training pair from a prepared photo: pix2pix_input(line drawing) | photo, 2·size × size."""
    if photo.size != (size, size):
        photo = prepare_photo(photo, size)
    edges = pix2pix_input(line_drawing(photo, method), size)
    pair = Image.new("RGB", (2 * size, size), "white")
    pair.paste(edges, (0, 0))
    pair.paste(photo.convert("RGB"), (size, 0))
    return pair


def split_pair(pair: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The edges (left half) and the photo (right half) of an aligned pair."""
    w, h = pair.size
    half = w // 2
    rgb = pair.convert("RGB")
    return rgb.crop((0, 0, half, h)), rgb.crop((half, 0, w, h))


def parameter_bytes(ngf: int = 64, ndf: int = 64) -> tuple[int, int]:
    """Bytes of float32 weights of the generator and of the discriminator for these widths."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        g = UnetGenerator(ngf=ngf, norm="batch", use_dropout=True)
        d = PatchDiscriminator(ndf=ndf)

    def size(module: torch.nn.Module) -> int:
        return sum(t.numel() * 4 for t in module.state_dict().values())
    return size(g), size(d)


def disk_needed(n_photos: int, size: int = SIZE, ngf: int = 64, ndf: int = 64) -> int:
    """Bytes a training run needs: pairs, two checkpoints (one being written), two generator files, margin."""
    g, d = parameter_bytes(ngf, ndf)
    checkpoint = 3 * (g + d)  # weights plus Adam's two moments for each
    pairs = n_photos * 2 * size * size * 3  # uncompressed: PNG only does better
    return pairs + 2 * checkpoint + 2 * g + DISK_MARGIN


def contact_sheet(pairs: Sequence[Path], count: int = 6) -> Image.Image:
    """A few pairs (evenly spread over the set) in a grid, to check the drawings before training."""
    if not pairs:
        raise TrainingInputError("there are no pairs to show")
    count = max(1, min(count, len(pairs)))
    chosen = [pairs[i * len(pairs) // count] for i in range(count)]
    images = []
    for path in chosen:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    w, h = images[0].size
    columns = 2 if count > 3 else 1
    rows = math.ceil(count / columns)
    gap = 4  # grey, so the white paper of neighbouring drawings does not run together
    sheet = Image.new("RGB", (columns * w + (columns + 1) * gap, rows * h + (rows + 1) * gap), (128, 128, 128))
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        sheet.paste(im.resize((w, h)) if im.size != (w, h) else im, (gap + c * (w + gap), gap + r * (h + gap)))
    return sheet


def build_pairs(
    photos_dir: Path, out_dir: Path, *, size: int = SIZE, method: Method = "canny", ngf: int = 64, ndf: int = 64,
) -> PairSet:
    """Every photo in photos_dir (not its subfolders) as an aligned pair under out_dir/train and out_dir/held_out.

    Built in a temporary folder beside out_dir and renamed into place, so a crash never leaves a
    half-built set that looks complete. An existing pair set at out_dir is replaced.
    """
    photos_dir, out_dir = Path(photos_dir), Path(out_dir)
    if method not in METHODS:
        raise TrainingInputError(f"edge method must be one of {', '.join(METHODS)}, got {method!r}")
    if size != SIZE:
        raise TrainingInputError(f"pairs are {SIZE}×{SIZE} for the unet_256 generator, got size {size}")
    if not photos_dir.exists():
        raise TrainingInputError(f"photos folder {photos_dir} does not exist")
    if not photos_dir.is_dir():
        raise TrainingInputError(f"{photos_dir} is not a folder; give the folder that holds the photos")
    files = sorted((p for p in photos_dir.iterdir() if p.is_file()), key=lambda p: p.name)
    if not files:
        raise TrainingInputError(
            f"{photos_dir} holds no files; put at least {MIN_PHOTOS} photos there to learn from"
        )
    _check_target(out_dir, photos_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_disk(out_dir.parent, len(files), size, ngf, ndf)

    for stale in (*out_dir.parent.glob(f".{out_dir.name}.building-*"), *out_dir.parent.glob(f".{out_dir.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)  # left by a build that was killed
    # Not mkdtemp: its folder is private (0700), and the set keeps the folder's permissions when renamed.
    building = out_dir.parent / f".{out_dir.name}.building-{secrets.token_hex(4)}"
    building.mkdir()
    try:
        staged, skipped, images = _stage(files, building / "all", size, method)
        _check_count(photos_dir, files, staged, skipped, images)
        held = set(held_out_indices(len(staged)))
        names: dict[str, list[str]] = {"train": [], "held_out": []}
        for part in names:
            (building / part).mkdir()
        for i, (path, source) in enumerate(staged):
            part = "held_out" if i in held else "train"
            target = building / part / f"{len(names[part]):04d}.png"
            path.rename(target)
            names[part].append(source)
        (building / "all").rmdir()
        train = tuple(sorted((building / "train").iterdir()))
        contact_sheet(train).save(building / CONTACT_SHEET)
        relative = [f"train/{p.name}" for p in train] + [
            f"held_out/{p.name}" for p in sorted((building / "held_out").iterdir())
        ]
        manifest = {
            "format": 1, "size": size, "method": method, "fingerprint": _fingerprint(building, relative),
            "sources": names, "skipped": [[s.name, s.reason] for s in skipped],
        }
        (building / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _place(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return open_pairs(out_dir)


def open_pairs(out_dir: Path) -> PairSet:
    """The pair set that build_pairs left in out_dir, checked against its files."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingInputError(f"{out_dir} holds no pair set ({MANIFEST} is missing); build the pairs first") from None
    except (OSError, ValueError) as exc:
        raise TrainingInputError(f"the pair set in {out_dir} is damaged ({MANIFEST}: {exc}); build it again") from exc
    train = tuple(sorted((out_dir / "train").glob("*.png")))
    held_out = tuple(sorted((out_dir / "held_out").glob("*.png")))
    relative = [f"train/{p.name}" for p in train] + [f"held_out/{p.name}" for p in held_out]
    if len(train) != len(manifest["sources"]["train"]) or len(held_out) != len(manifest["sources"]["held_out"]) \
            or _fingerprint(out_dir, relative) != manifest["fingerprint"]:
        raise TrainingInputError(f"the pair set in {out_dir} was changed after it was built; build it again")
    return PairSet(
        root=out_dir, train=train, held_out=held_out, skipped=tuple(Skipped(n, r) for n, r in manifest["skipped"]),
        size=int(manifest["size"]), method=manifest["method"], fingerprint=manifest["fingerprint"],
        train_sources=tuple(manifest["sources"]["train"]), held_out_sources=tuple(manifest["sources"]["held_out"]),
    )


def _stage(
    files: list[Path], folder: Path, size: int, method: Method,
) -> tuple[list[tuple[Path, str]], list[Skipped], int]:
    """Each usable file as folder/NNNN.png (with its source name); the skipped files; how many were images."""
    folder.mkdir()
    staged: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    images = 0
    for file in files:
        photo, reason = _read(file, size)
        if photo is None:
            skipped.append(Skipped(file.name, reason))
            continue
        images += 1
        pair = aligned_pair(photo, size, method)
        edges = np.asarray(pair.crop((0, 0, size, size)).convert("L"))
        if (edges < 128).mean() < MIN_LINE_SHARE:
            skipped.append(Skipped(file.name, "no lines found in it (too plain, too dark or too blurred)"))
            continue
        path = folder / f"{len(staged):04d}.png"
        pair.save(path)
        staged.append((path, file.name))
    return staged, skipped, images


def _read(file: Path, size: int) -> tuple[Image.Image | None, str]:
    """The prepared photo, or None and why the file cannot be used."""
    try:
        with warnings.catch_warnings():
            # Above ~90 MP Pillow warns; a 108-MP phone photo is still a photo (JPEGs decode reduced below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                im.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at a fraction of a 12-MP photo
                im.load()
                if min(im.size) < size // 2:
                    w, h = im.size
                    return None, f"too small ({w}×{h}; needs at least {size // 2} px a side)"
                return prepare_photo(im, size), ""
    except UnidentifiedImageError:
        if file.suffix.lower() in (".heic", ".heif", ".avif"):
            return None, f"{file.suffix.lower()[1:].upper()} photos cannot be read here; save it as JPEG or PNG"
        return None, "not an image"
    except Image.DecompressionBombError:
        return None, "too large an image to open safely"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return None, f"damaged image ({text[:80]})"


def _check_count(photos_dir: Path, files: list[Path], staged: list, skipped: list[Skipped], images: int) -> None:
    if images == 0:
        raise TrainingInputError(
            f"none of the {len(files)} file{'s' if len(files) != 1 else ''} in {photos_dir} is an image easel can read"
        )
    if len(staged) < MIN_PHOTOS:
        held = held_out_count(MIN_PHOTOS)
        note = f" ({len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped)" if skipped else ""
        raise TrainingInputError(
            f"found {len(staged)} usable photo{'s' if len(staged) != 1 else ''} in {photos_dir}{note}; "
            f"training needs at least {MIN_PHOTOS}: {MIN_PHOTOS - held} to learn from and {held} held out to check it"
        )


def _check_target(out_dir: Path, photos_dir: Path) -> None:
    """out_dir may be new, empty, or a pair set built before; never a folder of anything else."""
    if out_dir.resolve() == photos_dir.resolve():
        raise TrainingInputError(f"the pairs cannot be written into the photos folder {photos_dir}; choose another")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise TrainingInputError(f"{out_dir} exists and is not a folder; choose another place for the pairs")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise TrainingInputError(
                f"{out_dir} already holds files that are not a pair set; choose an empty or new folder for the pairs"
            )


def _check_disk(where: Path, n_files: int, size: int, ngf: int, ndf: int) -> None:
    needed = disk_needed(n_files, size, ngf, ndf)
    free = shutil.disk_usage(where).free
    if free < needed:
        raise TrainingInputError(
            f"not enough disk space in {where}: the pairs and the training checkpoints need about "
            f"{_human(needed)}, {_human(free)} is free"
        )


def _place(building: Path, out_dir: Path) -> None:
    """Rename the finished set into place; a set built before is moved aside first, then deleted."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "set")
    os.replace(building, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fingerprint(root: Path, relative: list[str]) -> str:
    digest = hashlib.sha256()
    for name in relative:
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
