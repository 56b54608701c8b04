"""Photos → pix2pix training pairs: layout, EXIF, skipped files, the edges as /sketch --mode pix2pix sees them, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from generation.scribble.inputs import pix2pix_input
from generation.training import pairs as pairs_module
from generation.training.pairs import (
    MIN_PHOTOS,
    PairSet,
    TrainingInputError,
    build_pairs,
    contact_sheet,
    held_out_count,
    held_out_indices,
    line_drawing,
    open_pairs,
    prepare_photo,
)
from storage.errors import EaselError

SIZE = 256


def synthetic_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A picture with a soft gradient and a few solid shapes: clear edges, like objects against a backdrop."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    start, end = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = ((xx / w + yy / h) / 2.0)[..., None]
    image = Image.fromarray((start * (1 - t) + end * t).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        x1, y1 = x0 + rng.uniform(w * 0.15, w * 0.4), y0 + rng.uniform(h * 0.15, h * 0.4)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return image


def red_blue_photo() -> Image.Image:
    """400×300: red on the left, blue on the right, a yellow disc to give it more lines."""
    image = Image.new("RGB", (400, 300), (220, 30, 30))
    image.paste((30, 30, 220), (200, 0, 400, 300))
    ImageDraw.Draw(image).ellipse((60, 100, 140, 180), fill=(240, 220, 40))
    return image


def write_photos(folder: Path, count: int, *, junk: bool = True, exif: bool = True) -> Path:
    """count usable photos (JPEG and PNG; one stored sideways with an EXIF turn), plus a text file and a broken JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count - (1 if exif else 0)):
        photo = synthetic_photo(i, (320, 240) if i % 2 else (240, 300))
        if i % 3 == 0:
            photo.save(folder / f"photo-{i:02d}.png")
        else:
            photo.save(folder / f"photo-{i:02d}.jpg", quality=92)
    if exif:
        tags = Image.Exif()
        tags[0x0112] = 6  # "rotate 90° clockwise to display": the camera was held upright
        red_blue_photo().save(folder / "sideways.jpg", quality=95, exif=tags.tobytes())
    if junk:
        (folder / "notes.txt").write_text("shopping list, not a photo\n", encoding="utf-8")
        whole = folder / "broken.jpg"  # a JPEG cut short, as a failed copy leaves it
        synthetic_photo(99).save(whole, quality=92)
        whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PairSet]:
    root = tmp_path_factory.mktemp("pairs")
    photos = write_photos(root / "photos", 10)
    return photos, build_pairs(photos, root / "set")


def test_pairs_are_aligned_edges_beside_photos_split_into_train_and_held_out(built: tuple[Path, PairSet]) -> None:
    photos, pairs = built
    assert (len(pairs.train), len(pairs.held_out)) == (8, 2) == (10 - held_out_count(10), held_out_count(10))
    assert [p.name for p in pairs.train] == [f"{i:04d}.png" for i in range(8)]
    assert [p.name for p in pairs.held_out] == ["0000.png", "0001.png"]
    assert all(p.parent == pairs.root / "train" for p in pairs.train)
    assert all(p.parent == pairs.root / "held_out" for p in pairs.held_out)
    for path in pairs.train + pairs.held_out:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (2 * SIZE, SIZE))
    # Held out: the middle photo of each half of the list sorted by name, never a training photo as well.
    usable = sorted(p.name for p in photos.iterdir() if p.name not in ("notes.txt", "broken.jpg"))
    assert list(pairs.held_out_sources) == [usable[i] for i in held_out_indices(10)] == [usable[2], usable[7]]
    assert sorted(pairs.train_sources + pairs.held_out_sources) == usable
    assert (pairs.size, pairs.method) == (SIZE, "canny")
    assert re.fullmatch(r"[0-9a-f]{64}", pairs.fingerprint)
    assert open_pairs(pairs.root) == pairs
    # Nothing but the set is left beside it: the building folder was renamed into place.
    assert sorted(p.name for p in pairs.root.parent.iterdir()) == ["photos", "set"]
    assert pairs.root.stat().st_mode & 0o777 == photos.stat().st_mode & 0o777  # as any new folder, not private


def test_unreadable_files_are_skipped_and_named_with_the_reason(built: tuple[Path, PairSet]) -> None:
    _, pairs = built
    assert [str(s) for s in pairs.skipped][0] == "broken.jpg: " + pairs.skipped[0].reason
    reasons = {s.name: s.reason for s in pairs.skipped}
    assert set(reasons) == {"broken.jpg", "notes.txt"}
    assert reasons["notes.txt"] == "not an image"
    assert reasons["broken.jpg"].startswith("damaged image")


def test_the_stored_edges_are_exactly_what_sketch_mode_pix2pix_gives_the_model(built: tuple[Path, PairSet]) -> None:
    photos, pairs = built
    source = pairs.train_sources[1]
    with Image.open(photos / source) as im:
        photo = prepare_photo(im)
    with Image.open(pairs.train[1]) as im:
        pair = np.asarray(im)
    expected = np.asarray(pix2pix_input(line_drawing(photo), SIZE))
    assert np.array_equal(pair[:, :SIZE], expected)
    # Dark lines on white, grey-free; the right half is the photo itself (PNG: lossless).
    assert set(np.unique(pair[:, :SIZE])) <= {0, 255}
    dark = (pair[:, :SIZE, 0] == 0).mean()
    assert 0.002 < dark < 0.3
    assert np.array_equal(pair[:, SIZE:], np.asarray(photo))


def test_a_clean_line_drawing_survives_pix2pix_input(built: tuple[Path, PairSet]) -> None:
    photos, pairs = built
    for source in pairs.train_sources[:4]:
        with Image.open(photos / source) as im:
            drawing = np.asarray(line_drawing(prepare_photo(im))) < 128
        kept = np.asarray(pix2pix_input(Image.fromarray(np.where(drawing, 0, 255).astype(np.uint8))))[..., 0] == 0
        near = cv2.dilate(kept.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (drawing & near).sum() >= 0.95 * drawing.sum()  # the lines are kept…
        assert kept.mean() < 4 * drawing.mean()  # …and thickened a little, not turned into blobs


def test_the_exif_turn_is_applied_before_cropping(built: tuple[Path, PairSet]) -> None:
    _, pairs = built
    index = pairs.train_sources.index("sideways.jpg")
    with Image.open(pairs.train[index]) as im:
        photo = np.asarray(im)[:, SIZE:].astype(int)
    top, bottom = photo[:100].mean(axis=(0, 1)), photo[-100:].mean(axis=(0, 1))
    # Upright, the left (red) side of the stored pixels is at the top and the right (blue) one at the bottom.
    assert top[0] > top[2] + 100 and bottom[2] > bottom[0] + 100


def test_line_drawings_are_dark_lines_on_white_for_both_methods() -> None:
    photo = prepare_photo(synthetic_photo(3))
    for method in ("canny", "xdog"):
        drawing = np.asarray(line_drawing(photo, method))
        assert drawing.shape == (SIZE, SIZE)
        assert (drawing > 200).mean() > 0.7  # mostly paper
        assert (drawing < 100).mean() > 0.005  # with lines on it
    with pytest.raises(TrainingInputError, match="edge method must be one of canny, xdog, got 'hed'"):
        line_drawing(photo, "hed")  # type: ignore[arg-type]


def test_prepare_photo_crops_the_centre_square_and_puts_transparency_on_white() -> None:
    wide = Image.new("RGBA", (600, 200), (0, 0, 0, 0))
    wide.paste((0, 200, 0, 255), (200, 0, 400, 200))  # the middle third: opaque green
    prepared = prepare_photo(wide)
    assert (prepared.mode, prepared.size) == ("RGB", (SIZE, SIZE))
    assert np.abs(np.asarray(prepared)[SIZE // 2, SIZE // 2].astype(int) - (0, 200, 0)).max() <= 2
    assert prepare_photo(Image.new("RGBA", (300, 300), (0, 0, 0, 0))).getpixel((5, 5)) == (255, 255, 255)


def test_the_contact_sheet_shows_a_few_pairs_in_a_grid(built: tuple[Path, PairSet]) -> None:
    _, pairs = built
    with Image.open(pairs.contact_sheet) as im:
        assert im.format == "PNG"
        assert im.size == (2 * 2 * SIZE + 3 * 4, 3 * SIZE + 4 * 4)  # 6 pairs: 3 rows of 2, 4-px gaps
    assert contact_sheet(pairs.train, count=2).size == (2 * SIZE + 8, 2 * SIZE + 12)


def test_held_out_count_is_a_tenth_and_at_least_two() -> None:
    assert [held_out_count(n) for n in (8, 10, 24, 25, 100, 1000)] == [2, 2, 2, 2, 10, 100]
    for n in (8, 9, 31, 200):
        chosen = held_out_indices(n)
        assert len(set(chosen)) == held_out_count(n) and all(0 <= i < n for i in chosen)


def error(photos: Path, out: Path, **kwargs: object) -> str:
    with pytest.raises(TrainingInputError) as caught:
        build_pairs(photos, out, **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, EaselError)
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_each_unusable_folder_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "set"
    assert error(tmp_path / "nowhere", out) == f"photos folder {tmp_path / 'nowhere'} does not exist"
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert "is not a folder" in error(tmp_path / "file.jpg", out)
    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty", out) == (
        f"{tmp_path / 'empty'} holds no files; put at least {MIN_PHOTOS} photos there to learn from"
    )
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(5):
        (junk / f"note-{i}.txt").write_text("not a photo", encoding="utf-8")
    assert error(junk, out) == f"none of the 5 files in {junk} is an image easel can read"
    few = write_photos(tmp_path / "few", 5)
    assert error(few, out) == (
        f"found 5 usable photos in {few} (2 files skipped); training needs at least 8: "
        "6 to learn from and 2 held out to check it"
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "few", "file.jpg", "junk"]


def test_too_little_disk_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=False)

    class Usage:
        total, used, free = 10**12, 10**12 - 300 * 1024**2, 300 * 1024**2

    monkeypatch.setattr(pairs_module.shutil, "disk_usage", lambda where: Usage())
    text = error(photos, tmp_path / "set")
    assert re.fullmatch(
        rf"not enough disk space in {re.escape(str(tmp_path))}: the pairs and the training checkpoints need about "
        r"1\.\d GB, 300\.0 MB is free", text,
    ), text
    # With ngf=ndf=8 the models are ~64× smaller and it fits.
    assert len(build_pairs(photos, tmp_path / "set", ngf=8, ndf=8).train) == 6


def test_a_crash_while_building_leaves_no_set_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=False)
    real = pairs_module.aligned_pair
    calls = []

    def failing(*args: object, **kwargs: object) -> Image.Image:
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("out of memory")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pairs_module, "aligned_pair", failing)
    with pytest.raises(MemoryError):
        build_pairs(photos, tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    # A build killed outright leaves its building folder behind; the next build clears it away.
    (tmp_path / ".set.building-0badc0de" / "all").mkdir(parents=True)
    monkeypatch.undo()
    build_pairs(photos, tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "set"]


def test_rebuilding_replaces_a_set_but_never_a_folder_of_other_files(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 9, junk=False)
    first = build_pairs(photos, tmp_path / "set")
    (photos / "photo-00.png").unlink()
    second = build_pairs(photos, tmp_path / "set", method="xdog")
    assert (len(first.train), len(second.train), second.method) == (7, 6, "xdog")
    assert json.loads((tmp_path / "set" / "pairs.json").read_text())["method"] == "xdog"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "set"]
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("precious", encoding="utf-8")
    assert "already holds files that are not a pair set" in error(photos, other)
    assert (other / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert "cannot be written into the photos folder" in error(photos, photos)


def test_a_set_changed_after_it_was_built_is_noticed(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=False)
    pairs = build_pairs(photos, tmp_path / "set")
    Image.new("RGB", (2 * SIZE, SIZE), "white").save(pairs.train[0])
    with pytest.raises(TrainingInputError, match="was changed after it was built; build it again"):
        open_pairs(pairs.root)
    with pytest.raises(TrainingInputError, match="holds no pair set"):
        open_pairs(tmp_path / "photos")


def test_sixteen_bit_photos_keep_their_greys_and_heic_files_say_what_to_do(tmp_path: Path) -> None:
    ramp = Image.fromarray(np.linspace(0, 65535, 300 * 300).reshape(300, 300).astype(np.uint16))
    assert ramp.mode == "I;16"
    grey = np.asarray(prepare_photo(ramp))
    assert grey[0, 0, 0] < 60 and grey[-1, -1, 0] > 195  # not clipped to white
    photos = write_photos(tmp_path / "photos", 8, junk=False)
    (photos / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    skipped = {s.name: s.reason for s in build_pairs(photos, tmp_path / "set").skipped}
    assert skipped == {"IMG_0001.HEIC": "HEIC photos cannot be read here; save it as JPEG or PNG"}
