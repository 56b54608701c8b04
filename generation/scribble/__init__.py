"""Phone photos of pencil sketches cleaned into the inputs of sketch models (ControlNet scribble, pix2pix).

No torch here: this runs in the bot layer's upload path (off the event loop), with numpy, OpenCV
and Pillow only. Every step works at a working scale of at most WORK_SIDE px on the long side, so
a 12-MP photo costs about what a 1-MP one does; `stroke_mask` maps its result back to the input's
own resolution. A photo that shows the table around the sheet is cleaned inside the sheet only
(`sheet_mask`), and a hard shadow's edge across the page is divided out with the lighting.

light.py flattens the lighting, sheet.py finds the sheet, rules.py finds a notebook's ruled lines,
strokes.py finds the strokes, inputs.py shapes them for each model; colour.py tells coloured drawings apart.
"""

from generation.scribble.colour import is_coloured
from generation.scribble.inputs import control_image, control_size, pix2pix_input
from generation.scribble.sheet import sheet_mask
from generation.scribble.strokes import stroke_mask

__all__ = ["control_image", "control_size", "is_coloured", "pix2pix_input", "sheet_mask", "stroke_mask"]
