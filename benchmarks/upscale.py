"""How fast is an ESRGAN-family upscaler on this machine, and how much memory does one upscale take?

    python benchmarks/upscale.py [--net tiny|esrgan|compact] [--model PATH] [--size 256] [--tile 512]
                                 [--overlap 32] [--runs 3] [--device cpu|cuda] [--half]

Loads the upscaler through easel's own loader (`generation.upscale.load_upscaler`): a real weights file with
--model, otherwise random weights saved to a temporary .pth first (nothing is downloaded) in one of three
shapes: `tiny` (ESRGAN 4×, 2 blocks of 8 features: a smoke test of the tiling, not a real speed), `esrgan`
(RealESRGAN_x4plus' shape: 23 blocks, 64 features, growth 32) or `compact` (realesr-general-x4v3's shape:
32 convs of 64 features, PReLU). Upscales a --size × --size picture once to warm up, then --runs times, and
prints seconds per megapixel of *input* (the median run) and the peak memory of one upscale above what was
in use before it: on CUDA torch's peak allocated bytes, on the CPU the peak resident set (Linux's VmHWM,
reset before the run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "tiny": ("ESRGAN", {"features": 8, "blocks": 2, "growth": 4}),
    "esrgan": ("ESRGAN", {"features": 64, "blocks": 23, "growth": 32}),
    "compact": ("SRVGG", {"features": 64, "convs": 32, "activation": "prelu"}),
}


def random_weights(shape: str, folder: Path) -> Path:
    """A random-weight network of the named shape, saved as a .pth file."""
    import torch

    from generation.upscale.networks import RRDBNet, SRVGGNetCompact

    torch.manual_seed(0)
    architecture, sizes = SHAPES[shape]
    network = RRDBNet(**sizes) if architecture == "ESRGAN" else SRVGGNetCompact(**sizes)
    path = folder / f"random-{shape}.pth"
    torch.save(network.state_dict(), path)
    return path


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


def _reset_peak() -> bool:
    """Reset Linux's peak-resident counter (VmHWM) to the current resident size; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--model", type=Path, help="a real upscaler file instead of random weights")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 weights (CUDA only)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from generation.upscale import load_upscaler

    device = torch.device(args.device)
    dtype = torch.float16 if args.half else torch.float32
    if args.half and device.type != "cuda":
        parser.error("--half is for CUDA; on the CPU float16 is slower, not faster")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or random_weights(args.net, Path(tmp))
        upscaler = load_upscaler(path, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), "RGB")

    def upscale() -> Image.Image:
        out = upscaler.upscale(picture, tile=args.tile, overlap=args.overlap)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    upscale()  # warm-up: kernels chosen, allocator settled
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _status("VmRSS")
        exact = _reset_peak()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        out = upscale()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak, where = torch.cuda.max_memory_allocated() - before, "GPU memory allocated (torch)"
    else:
        peak = _status("VmHWM") - before
        where = "resident memory" + ("" if exact else " (VmHWM could not be reset: peak since the process began)")

    parameters = sum(p.numel() for p in upscaler.network.parameters())
    source = str(path) if args.model else f"random weights, {args.net} shape"
    threads = torch.get_num_threads()
    megapixels = args.size * args.size / 1e6
    median = statistics.median(times)
    print(f"{upscaler.architecture} {upscaler.scale}× ({source}): {parameters:,} parameters, "
          f"{str(upscaler.dtype).removeprefix('torch.')} on {args.device}"
          + (f" ({threads} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})" if device.type == "cpu"
             else ""))
    print(f"{args.size}×{args.size} → {out.width}×{out.height}, tile {args.tile} overlap {args.overlap}: "
          f"{median / megapixels:.2f} s per input megapixel ({median:.3f} s per picture, median of {args.runs}; "
          f"runs {min(times):.3f}–{max(times):.3f} s)")
    print(f"peak {where} during one upscale: +{peak / 2**20:.0f} MiB above the {before / 2**20:.0f} MiB in use before")


if __name__ == "__main__":
    main()
