"""Fixtures shared by every test package: a tiny random-weight Stable Diffusion model, built offline."""

from __future__ import annotations

import os
import socket

# The tiny model's tensors are far too small to gain from intra-op threads, and on a 2-core runner
# OpenMP workers spinning against the event loop, aiosqlite and other processes made a 50-step run
# go from under a second to half a minute. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from generation.tiny import make_tiny_controlnet, make_tiny_model  # noqa: E402
from storage.records import Img2ImgParams, JobKind, JobParams, Txt2ImgParams  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers folder (model_index.json, unet, vae, text encoder, tokenizer) written once per session."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers ControlNet folder shaped for the tiny model, as control_v11p_sd15_scribble is for SD 1.5."""
    return make_tiny_controlnet(tiny_model, tmp_path_factory.mktemp("tiny-controlnet"))


def params(**changes: object) -> JobParams:
    """The one test job: a small text→image job, or image→image when kind, strength or input is given."""
    drawing: dict[str, object] = dict(
        prompt="a lighthouse at dusk", negative_prompt="", seed=42, steps=2, cfg=7.0, width=64, height=64,
        count=1, scheduler="dpmpp_2m",
    )
    kind = changes.pop("kind", None)
    if kind is JobKind.IMG2IMG or "strength" in changes or "input_sha256" in changes:
        return Img2ImgParams(**{**drawing, "strength": 0.75, "input_sha256": "0" * 64, **changes})
    return Txt2ImgParams(**{**drawing, **changes})


async def delivered(history, job_id: int, seconds: float = 60) -> bool:
    """Whether the job is marked delivered, waiting (bounded) for the write that follows a frontend's send."""
    import asyncio

    for _ in range(int(seconds / 0.02)):
        job = await history.get(job_id)
        if job is not None and job.delivered:
            return True
        await asyncio.sleep(0.02)
    return False


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on now: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
