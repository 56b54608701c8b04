"""How big and how fast is a full-size StyleGAN2 face generator on this machine?

    python benchmarks/face_speed.py [--resolution 1024] [--images 3] [--device cpu|cuda]

Builds NVIDIA's FFHQ 1024 px configuration (z 512, w 512, 8 mapping layers, channel_base 32768,
channel_max 512) with random weights — nothing is downloaded — and prints its parameter count and the
time per image (mapping and synthesis, noise mode const, after one warm-up image).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from generation.faces.stylegan2 import Generator, to_uint8, z_for_seed

    torch.manual_seed(0)
    generator = Generator(z_dim=512, w_dim=512, img_resolution=args.resolution,
                          mapping_kwargs={"num_layers": 8},
                          synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4,
                                            "conv_clamp": 256}).to(args.device)
    parameters = sum(p.numel() for p in generator.parameters())
    times = []
    with torch.inference_mode():
        for seed in range(args.images + 1):
            start = time.perf_counter()
            ws = generator.mapping(z_for_seed(seed, 512).to(args.device), None, truncation_psi=0.7)
            to_uint8(generator.synthesis(ws, noise_mode="const"))
            times.append(time.perf_counter() - start)
    threads = torch.get_num_threads()
    print(f"StyleGAN2 {args.resolution} px generator: {parameters:,} parameters ({parameters * 4 / 2**20:.0f} MiB fp32)")
    print(f"{args.device} ({threads} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}): "
          f"{sum(times[1:]) / len(times[1:]):.2f} s per image (first, with warm-up: {times[0]:.2f} s)")


if __name__ == "__main__":
    main()
