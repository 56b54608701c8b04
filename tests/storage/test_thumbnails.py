"""Gallery thumbnails from real PNGs: sizes, the WebP format, and the cache by content."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from storage import thumbnails
from storage.thumbnails import thumbnail


def png(path: Path, size: tuple[int, int], colour: tuple[int, ...] = (200, 80, 20), mode: str = "RGB") -> Path:
    """A real PNG file: a gradient, so a resize has something to do."""
    image = Image.new(mode, size, colour)
    image.paste(Image.linear_gradient("L").resize(size).convert(mode), (0, 0), Image.linear_gradient("L").resize(size))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


@pytest.mark.parametrize("size, side, expected", [
    ((1024, 512), 320, (320, 160)),  # the longer side fits
    ((512, 768), 320, (213, 320)),  # portrait
    ((512, 512), 100, (100, 100)),
    ((100, 40), 320, (100, 40)),  # never enlarged
    ((320, 320), 320, (320, 320)),
    ((4000, 10), 320, (320, 1)),  # never below one pixel
])
def test_the_longer_side_is_at_most_side_and_nothing_is_enlarged(
    tmp_path: Path, size: tuple[int, int], side: int, expected: tuple[int, int]
) -> None:
    made = thumbnail(png(tmp_path / "a.png", size), tmp_path / "cache", side)
    with Image.open(made) as image:
        assert (image.format, image.size, image.mode) == ("WEBP", expected, "RGB")
    assert made.parent == tmp_path / "cache" and made.suffix == ".webp"


def test_it_is_made_once_and_found_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = png(tmp_path / "images" / "1-0.png", (640, 480))
    made = thumbnail(original, tmp_path / "cache")
    assert made.name == f"{hashlib.sha256(original.read_bytes()).hexdigest()}-320.webp"
    before = made.stat()

    def never(*args: object) -> bytes:
        raise AssertionError("made again")

    monkeypatch.setattr(thumbnails, "_webp", never)
    assert thumbnail(original, tmp_path / "cache") == made
    copy = shutil.copy(original, tmp_path / "elsewhere.png")  # the same bytes under another name: the same thumbnail
    assert thumbnail(Path(copy), tmp_path / "cache") == made
    thumbnails._DIGESTS.clear()  # a new process: it reads and hashes the file again, and still finds it
    assert thumbnail(original, tmp_path / "cache") == made
    after = made.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [made.name]  # no temporary files left


def test_other_content_or_another_side_is_another_file(tmp_path: Path) -> None:
    first = thumbnail(png(tmp_path / "a.png", (640, 480)), tmp_path / "cache")
    second = thumbnail(png(tmp_path / "b.png", (640, 480), colour=(0, 0, 255)), tmp_path / "cache")
    bigger = thumbnail(tmp_path / "a.png", tmp_path / "cache", side=512)
    assert len({first, second, bigger}) == 3
    with Image.open(bigger) as image:
        assert image.size == (512, 384)
    # A file rewritten in place (the same name, other bytes) gets the thumbnail of what it holds now.
    png(tmp_path / "a.png", (640, 480), colour=(0, 0, 255))
    assert thumbnail(tmp_path / "a.png", tmp_path / "cache") == second


def test_transparency_is_kept_and_odd_modes_are_shown(tmp_path: Path) -> None:
    clear = thumbnail(png(tmp_path / "rgba.png", (64, 64), (10, 20, 30, 0), "RGBA"), tmp_path / "cache")
    with Image.open(clear) as image:
        assert image.mode == "RGBA" and image.getpixel((0, 0))[3] < 10
    for mode, colour in (("L", (90,)), ("P", (3,)), ("I;16", (1000,)), ("1", (1,))):
        made = thumbnail(png(tmp_path / f"{mode}.png", (640, 64), colour, mode), tmp_path / "cache", 64)
        with Image.open(made) as image:
            assert image.size == (64, 6)


def test_a_frame_of_an_animation_is_an_ordinary_image(tmp_path: Path) -> None:
    frame = png(tmp_path / "images" / "2026-12-04" / "7" / "7-3.png", (512, 512))
    with Image.open(thumbnail(frame, tmp_path / "cache", 160)) as image:
        assert image.size == (160, 160)


def test_a_missing_image_or_a_bad_side_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        thumbnail(tmp_path / "gone.png", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="side must be at least 1, got 0"):
        thumbnail(png(tmp_path / "a.png", (8, 8)), tmp_path / "cache", 0)
    (tmp_path / "not.png").write_bytes(b"not an image")
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError
        thumbnail(tmp_path / "not.png", tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*"))
