"""CPU offload hooked once onto the modules that every pipeline of the engine shares.

diffusers hooks offload per pipeline object: `enable_model_cpu_offload` first moves every module to
the host, and a text→image pipeline, its image→image twin and its ControlNet sibling each need their
own call, so every switch of job kind carried the whole model back across the bus. The hooks live on
the modules, though, and all three pipelines hold the same modules, so easel hooks them once here and
each pipeline finds them (its `_execution_device` reads them). A pipeline that did not install hooks
itself also skips diffusers' end-of-call re-hook, so the last module used stays on the card.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from accelerate.hooks import remove_hook_from_module


class SharedOffload:
    """`model`: whole modules move to the card when called, one of the chain at a time.
    `sequential`: weights stream in layer by layer (slow, the smallest footprint)."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in ("model", "sequential"):
            raise ValueError(f"unknown offload mode {mode!r}")
        self.mode, self.device = mode, device
        self.installs = 0  # how many times hooks were put on; switching job kinds must not add to it
        self._modules: list[torch.nn.Module] = []
        self._side: dict[int, object] = {}  # id(module) → its model-offload hook

    @property
    def installed(self) -> bool:
        return bool(self._modules)

    def install(self, chain: Sequence[torch.nn.Module], side: Sequence[torch.nn.Module] = ()) -> None:
        """Hook `chain` (used one after another: text encoder → UNet → VAE, each arrival sending the one
        before back to the host) and `side` (used beside the chain, e.g. a ControlNet next to the UNet)."""
        self.remove()
        if self.mode == "model":
            previous = None
            for module in chain:
                _, previous = cpu_offload_with_hook(module, self.device, prev_module_hook=previous)
            for module in side:
                _, hook = cpu_offload_with_hook(module, self.device)
                self._side[id(module)] = hook
        else:
            for module in (*chain, *side):
                # Buffers stream too, except on parameter-less wrappers (what diffusers does as well).
                cpu_offload(module, execution_device=self.device, offload_buffers=len(module._parameters) > 0)
        self._modules = [*chain, *side]
        self.installs += 1

    def park(self, keep: Sequence[torch.nn.Module] = ()) -> None:
        """Send side modules not needed by the next job back to the host (model offload only)."""
        wanted = {id(module) for module in keep}
        for key, hook in self._side.items():
            if key not in wanted:
                hook.offload()

    def remove(self) -> None:
        """Take every hook off; weights end up on the host, as they were before install."""
        for module in self._modules:
            remove_hook_from_module(module, recurse=True)
            if self.mode == "model":
                module.to("cpu")
        self._modules, self._side = [], {}
