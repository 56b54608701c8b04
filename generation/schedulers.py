"""The samplers people can pick by name; pure data, so the command parser may import it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class with options, and whether reruns at other step counts keep the picture."""

    class_name: str
    options: dict[str, object] = field(default_factory=dict)
    step_stable: bool = True


SCHEDULERS: dict[str, SchedulerSpec] = {
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
    ),
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "ddim": SchedulerSpec("DDIMScheduler"),
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": SchedulerSpec("UniPCMultistepScheduler"),
    "heun": SchedulerSpec("HeunDiscreteScheduler"),
    # Ancestral samplers add fresh noise every step: the same seed at another step count wanders.
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", step_stable=False),
}

DEFAULT_SCHEDULER = "dpmpp_2m"


def scheduler_help() -> str:
    """One line listing the names, marking those that are not step-stable."""
    return ", ".join(name if spec.step_stable else f"{name} (ancestral)" for name, spec in SCHEDULERS.items())
