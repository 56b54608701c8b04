"""The picture work around the actions on a result: where the original goes on an outpainted canvas, the
canvas and mask the model sees, the original's pixels put back, and enlarging (a network or Lanczos)."""

from __future__ import annotations

from PIL import Image, ImageFilter

from storage.params.outpaint import Box

OVERLAP = 8  # canvas pixels of the original the model redraws too (one latent), so the seam blends
FEATHER = 3  # pixels over which the original fades into what the model drew: a few at most


def canvas_and_mask(original: Image.Image, canvas_size: tuple[int, int], box: Box) -> tuple[Image.Image, Image.Image]:
    """The canvas the model starts from (the original in its box, the rest its blurred stretch: colours that
    belong, not a flat grey the VAE would carry in) and the mask of what it draws (white)."""
    left, top, width, height = box
    placed = original.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    canvas = placed.resize(canvas_size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(max(canvas_size) / 16))
    canvas.paste(placed, (left, top))
    mask = Image.new("L", canvas_size, 255)
    inner = (left + OVERLAP, top + OVERLAP, left + width - OVERLAP, top + height - OVERLAP)
    if inner[0] < inner[2] and inner[1] < inner[3]:
        # A canvas edge the original touches is no seam: keep the original up to it.
        inner = (left if left == 0 else inner[0], top if top == 0 else inner[1],
                 inner[2] if left + width < canvas_size[0] else canvas_size[0],
                 inner[3] if top + height < canvas_size[1] else canvas_size[1])
        mask.paste(0, inner)
    return canvas, mask


def paste_back(drawn: Image.Image, original: Image.Image, box: Box) -> Image.Image:
    """What the model drew with the original's pixels in their box, faded in over FEATHER pixels at the seams
    (inside the box, so the middle is exactly the original)."""
    left, top, width, height = box
    placed = original.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    alpha = Image.new("L", (width, height), 0)
    edges = (left > 0, top > 0, left + width < drawn.width, top + height < drawn.height)
    for k in range(FEATHER + 1):
        level = round(255 * (k + 1) / (FEATHER + 1))
        inset = (k if edges[0] else 0, k if edges[1] else 0,
                 width - (k if edges[2] else 0), height - (k if edges[3] else 0))
        if inset[0] < inset[2] and inset[1] < inset[3]:
            alpha.paste(level, inset)
    result = drawn.convert("RGB").copy()
    result.paste(placed, (left, top), alpha)
    return result
