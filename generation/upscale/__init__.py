"""ESRGAN-family upscalers (ESRGAN/RRDBNet in either key layout, Real-ESRGAN compact): loading and tiled running."""

from generation.upscale.loading import UpscalerError, load_upscaler
from generation.upscale.upscaler import Upscaler

__all__ = ["Upscaler", "UpscalerError", "load_upscaler"]
