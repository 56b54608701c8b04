"""The torch device a worker draws on: the configured one, or the best this machine has."""

from __future__ import annotations

import os

import torch

from generation.engine import ModelLoadError


def pick_device(requested: str) -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("[generation] device is 'cuda' but torch sees no CUDA GPU; set device = \"auto\" or \"cpu\"")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("[generation] device is 'mps' but this torch has no MPS support; set device = \"auto\" or \"cpu\"")
    return torch.device(requested)


def device_name(requested: str) -> str:
    """The card (or CPU) a worker with this [generation] device draws on, for `easel workers`."""
    try:
        device = pick_device(requested)
    except ModelLoadError:
        return f"{requested} (not available)"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)" if device.type == "cpu" else device.type
