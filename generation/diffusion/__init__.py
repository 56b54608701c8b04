"""Stable Diffusion text→image, image→image and sketches on one lazily loaded set of weights.

loading.py reads the weights (and load_errors.py says why they did not load); memory.py and
offload.py fit them onto the card; engine.py holds them and runs jobs, with previews from preview.py.
"""

from generation.device import device_name, pick_device
from generation.diffusion.engine import DiffusionEngine

__all__ = ["DiffusionEngine", "device_name", "pick_device"]
