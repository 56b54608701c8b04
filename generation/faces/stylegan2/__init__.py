"""StyleGAN2 generator in plain PyTorch, parameter-for-parameter compatible with NVIDIA's stylegan2-ada-pytorch.

Our own code, written from the published architecture. Module and tensor names follow NVIDIA's
``training/networks.py`` so that the ``G_ema`` state dict of their ``.pkl`` loads with
``load_state_dict(strict=True)``, and ``Generator(**init_kwargs)`` accepts the constructor
arguments stored in those pickles. Everything runs in float32 with ordinary torch ops (no custom
CUDA/C++), which is what NVIDIA's code computes on CPU with ``force_fp32``; their fp16 blocks
change nothing but rounding. Only the 'skip' synthesis architecture (every published FFHQ model)
and unconditional models (``c_dim == 0``) are supported; other options raise ``ValueError``.

ops.py holds the primitives, layers.py the layers, networks.py the mapping and synthesis networks
and the Generator; latents.py what the face engine does with one (seeds, mixing, directions).
"""

from generation.faces.stylegan2.latents import edit, mix, sefa_directions, style_bands, to_uint8, z_for_seed
from generation.faces.stylegan2.networks import Generator, MappingNetwork, SynthesisNetwork
from generation.faces.stylegan2.ops import modulated_conv2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "edit",
    "mix",
    "modulated_conv2d",
    "sefa_directions",
    "setup_filter",
    "style_bands",
    "to_uint8",
    "upfirdn2d",
    "upsample2d",
    "z_for_seed",
]
