"""What does an animation cost: seconds per frame in each mode, and what writing the frames and the video adds,
as a share of the drawing time — all measured in one run, so the ratios hold on any machine.

    python benchmarks/animate.py [--shape tiny|sd15] [--device auto|cpu|cuda] [--frames 12] [--size 64]
                                 [--steps 10]

Each mode is drawn through the engine one frame a turn, as the queue draws it (`--shape tiny`: the test suite's
tiny SD 1.5, a smoke test of the code path; `sd15`: an SD 1.5-sized random model, about 2 GB, written to a
temporary folder first). Then the frames are saved as the queue saves a finished animation (a PNG with its
parameters per frame, and the H.264 MP4) and that time is set against the drawing's. Also printed: encoding
the MP4 alone, and fitting it into a tenth of its size (what a chat with a small upload limit costs).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generation.config import GenerationConfig  # noqa: E402
from generation.diffusion import DiffusionEngine, pick_device  # noqa: E402
from generation.engine import EngineResult  # noqa: E402
from generation.saving import save_images  # noqa: E402
from generation.tiny import make_tiny_model  # noqa: E402
from generation.video import encode_mp4, fit_video  # noqa: E402
from storage.images import ImageStore, animation_video  # noqa: E402
from storage.params import AnimateParams  # noqa: E402
from storage.records import JobRecord, JobStatus, Owner  # noqa: E402


class Quiet:
    cancelled = False
    wants_preview = False

    def step(self, *args) -> None:
        pass


def synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def draw(engine: DiffusionEngine, params: AnimateParams, inputs: tuple, device: torch.device):
    """Every frame a turn of its own, as the queue hands them out; (frames, seeds, run, seconds per frame)."""
    frames, seeds, result = [], [], None
    synced(device)
    start = time.perf_counter()
    while len(frames) < params.frames:
        result = engine.run(params, inputs + tuple(frames), Quiet())
        frames += result.images
        seeds += result.seeds
    synced(device)
    return frames, seeds, result.run, (time.perf_counter() - start) / params.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=None, help="frame side (default: 64 tiny, 512 sd15)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    size = args.size or (64 if args.shape == "tiny" else 512)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model"
        if args.shape == "tiny":
            make_tiny_model(model)
        else:
            from benchmarks.gpu import make_sd15_sized

            model = make_sd15_sized(model)
        engine = DiffusionEngine(GenerationConfig(device=str(device), model=str(model), preview_every=0))
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
        common = dict(prompt="a lighthouse at dusk", seed=3, steps=args.steps, cfg=7.0, width=size, height=size,
                      scheduler="dpmpp_2m", frames=args.frames)
        modes = {
            "sweep": (AnimateParams(**common, mode="sweep", input_sha256="x"), (picture,)),
            "zoom": (AnimateParams(**common, mode="zoom", zoom=1.04), ()),
            "video": (AnimateParams(**common, mode="video", frame_inputs=("x",) * args.frames),
                      (picture,) * args.frames),
        }
        engine.run(modes["zoom"][0].frame_params(0), (), Quiet())  # the model loaded before anything is timed
        print(f"{args.shape} model, {size}x{size}, {args.steps} steps, {args.frames} frames, {device}, "
              f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
        store = ImageStore(Path(folder) / "data")
        for number, (mode, (params, inputs)) in enumerate(modes.items(), start=1):
            frames, seeds, run, per_frame = draw(engine, params, inputs, device)
            job = JobRecord(id=number, owner=Owner("console", "bench"), params=params, status=JobStatus.RUNNING,
                            parent_id=None, created_at=datetime.now(timezone.utc))
            start = time.perf_counter()
            images = save_images(store, job, EngineResult(tuple(frames), tuple(seeds), run))
            saving = time.perf_counter() - start
            mp4 = animation_video(dataclasses.replace(job, images=tuple(images))).read_bytes()
            start = time.perf_counter()
            encode_mp4(frames, params.fps)
            encoding = time.perf_counter() - start
            drawing = per_frame * params.frames
            print(f"{mode:>5}: {per_frame:.3f} s/frame; saving {len(frames)} PNG + MP4 {saving:.2f} s = "
                  f"{100 * saving / drawing:.1f} % of drawing ({drawing:.1f} s), of which the MP4 alone "
                  f"{encoding:.2f} s = {100 * encoding / drawing:.1f} %; MP4 {len(mp4) / 1024:.0f} KiB")
        start = time.perf_counter()
        fitted = fit_video(mp4, frames, params.fps, max(len(mp4) // 10, 4096), name="bench")
        took = time.perf_counter() - start
        what = f"{len(fitted.data) / 1024:.0f} KiB {fitted.format} ({fitted.note})" if fitted else "nothing fits"
        print(f"fitting the last MP4 into a tenth of its size: {took:.2f} s → {what}")


if __name__ == "__main__":
    main()
