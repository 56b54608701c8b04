"""Does the sketch engine add only the ControlNet to memory, never a second copy of the base model?

    python benchmarks/sketch_memory.py [--scale 0.5] [--device cpu|cuda]

Builds a Stable Diffusion 1.5-shaped model and a ControlNet from configs with random weights (nothing is
downloaded; --scale 1.0 is SD 1.5's own width, 0.5 halves every channel count), then, in a fresh process:
loads easel's diffusion engine, draws one text→image job, and then one sketch job. It prints how much
resident memory (CPU) or allocated GPU memory grew when the sketch engine loaded, divided by the
ControlNet's own weight bytes: near 1.0 means the ControlNet was added to the loaded base model, where a
second copy of the base model would show as a ratio far above 1 (the base model's bytes are printed too).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(folder: Path, scale: float) -> tuple[Path, Path]:
    """An SD 1.5-shaped pipeline (channels × scale) and a ControlNet made from its UNet, saved to folder."""
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from generation.tiny import write_tokenizer_files

    torch.manual_seed(0)
    width = [int(c * scale) // 32 * 32 for c in (320, 640, 1280, 1280)]
    unet = UNet2DConditionModel(block_out_channels=width, cross_attention_dim=768, layers_per_block=2,
                                attention_head_dim=8, sample_size=64)
    vae = AutoencoderKL(block_out_channels=[int(c * scale) // 32 * 32 for c in (128, 256, 512, 512)],
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        latent_channels=4, layers_per_block=2, sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=520, hidden_size=768, intermediate_size=3072,
                                                num_attention_heads=12, num_hidden_layers=12,
                                                max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1))
    tokens = folder / "tokenizer-files"
    write_tokenizer_files(tokens)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tokens, model_max_length=77),
        unet=unet, scheduler=DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                         beta_end=0.012, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "sd")
    ControlNetModel.from_unet(unet).save_pretrained(folder / "controlnet")
    return folder / "sd", folder / "controlnet"


def weight_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


def resident() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def measure(model: Path, controlnet: Path, device: str) -> None:
    """Run in a fresh process: the growth in memory when the sketch engine loads after text→image."""
    import torch
    from PIL import Image, ImageDraw

    from generation.config import GenerationConfig, SketchConfig
    from generation.diffusion import DiffusionEngine
    from storage.params import SketchParams, Txt2ImgParams

    class Quiet:
        cancelled = False

        def step(self, *args) -> None:
            pass

    def used() -> int:
        gc.collect()
        return torch.cuda.memory_allocated() if device == "cuda" else resident()

    engine = DiffusionEngine(GenerationConfig(model=str(model), device=device, memory="speed", preview_every=0),
                             SketchConfig(controlnet=str(controlnet)))
    drawing = Image.new("RGB", (256, 256), "black")
    ImageDraw.Draw(drawing).rectangle((60, 60, 200, 200), outline="white", width=4)
    common = dict(prompt="a house", seed=1, steps=1, cfg=7.0, width=256, height=256, scheduler="dpmpp_2m")
    for _ in range(2):  # the allocator settles after a job or two
        engine.run(Txt2ImgParams(**common), (), Quiet())
    before = used()
    engine._controlnet_pipe(engine.load())  # what the first sketch job loads
    loaded = used()
    engine.run(SketchParams(**common, input_sha256="-", control_sha256="-"), (drawing,), Quiet())
    ran = used()
    controlnet_bytes, base_bytes = weight_bytes(controlnet), weight_bytes(model)
    where = "allocated GPU memory" if device == "cuda" else "resident memory"
    half = engine.run_info().dtype in ("float16", "bfloat16")
    own = controlnet_bytes / 2 if half else controlnet_bytes
    print(f"base model weights {base_bytes / 2**20:.0f} MiB, ControlNet weights {controlnet_bytes / 2**20:.0f} MiB "
          f"(float32 on disk; the engine runs {engine.run_info().dtype})")
    print(f"{where} grew by {(ran - before) / 2**20:.0f} MiB with the sketch engine loaded and its first job run: "
          f"{(ran - before) / own:.2f} × the ControlNet's weights "
          f"(a second base model would add {(base_bytes / 2 if half else base_bytes) / 2**20:.0f} MiB more)")
    print(f"(right after loading: {(loaded - before) / 2**20:.0f} MiB; safetensors weights are mapped from disk "
          "and count once a job touches them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measure", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure, args.device)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model, controlnet = build(Path(tmp), args.scale)
        subprocess.run([sys.executable, __file__, "--device", args.device, "--measure", str(model), str(controlnet)],
                       check=True)


if __name__ == "__main__":
    main()
