"""What does the model library cost: a cold load, a switch between two loaded models, a LoRA on and off, and
the memory two loaded models hold?

    python benchmarks/models.py [--shape tiny|sd15] [--device auto|cpu|cuda] [--steps 4] [--size 64]
                                [--rank 8] [--repeats 3]

Two models go into one DiffusionEngine as [models.a] and [models.b] with keep_in_ram = 2, as `easel run`
would load them: `tiny` is the test suite's tiny SD 1.5 and tiny SDXL (a smoke test of the code path, not a
real cost); `sd15` two SD 1.5-sized random models (UNet 320/640/1280/1280, CLIP-L-sized text encoder, saved
in fp16; about 2 GB each on disk). Printed, each the median of --repeats:

- cold load: the first job's load of each model (read from disk, placed on the device);
- switch from RAM: b → a and a → b once both are loaded (on a GPU the weights move over the bus; on the CPU
  there is nothing to move, so it is the bookkeeping only), and one job's time for scale;
- resident: the process's resident memory with both models loaded, and the GPU's allocated memory;
- LoRA: a kohya-format LoRA of --rank on every attention projection of model a (made from its own module
  names): the first application (file read and adapters injected), a cached one, taking it off, and a job
  with it against one without.

Nothing is downloaded; the models are written to a temporary folder first.
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

import torch  # noqa: E402

from generation.addons import LoraCache, LoraUse, apply_loras, remove_loras  # noqa: E402
from generation.config import GenerationConfig, ModelEntry, ModelsConfig  # noqa: E402
from generation.diffusion import DiffusionEngine, pick_device  # noqa: E402
from generation.tiny import make_tiny_lora, make_tiny_model  # noqa: E402
from storage.params import Txt2ImgParams  # noqa: E402

MiB = 2**20


class Quiet:
    cancelled = False
    wants_preview = False

    def step(self, *args) -> None:
        pass


def resident() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def synced(call):
    start = time.perf_counter()
    result = call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def models(shape: str, folder: Path) -> tuple[Path, Path]:
    if shape == "tiny":
        return make_tiny_model(folder / "a"), make_tiny_model(folder / "b", family="sdxl")
    from benchmarks.gpu import make_sd15_sized

    first = make_sd15_sized(folder / "one")
    torch.manual_seed(1)
    second = make_sd15_sized(folder / "two")
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="picture side (default 64 tiny, 512 sd15)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.size or (64 if args.shape == "tiny" else 512)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first, second = models(args.shape, folder)
        (folder / "loras").mkdir()
        lora = make_tiny_lora(first, folder / "loras" / "style.safetensors", rank=args.rank)
        config = GenerationConfig(model="a", device=device.type, preview_every=0)
        library = ModelsConfig(keep_in_ram=2, lora_dir=str(folder / "loras"), named={"a": ModelEntry(source=str(first)),
                                                     "b": ModelEntry(source=str(second))})
        engine = DiffusionEngine(config, models=library)
        print(f"models: {args.shape} ({', '.join(f'{n} {s.label}' for n, s in engine.specs.items())}) on {device}, "
              f"{size}x{size}, {args.steps} steps, {torch.get_num_threads()} CPU threads")
        before = resident()
        cold = {name: synced(lambda name=name: engine.load(name))[0] for name in ("a", "b")}
        print(f"cold load: a {cold['a']:.2f} s, b {cold['b']:.2f} s")

        def job(name: str, prompt: str = "a lighthouse at dusk"):
            params = Txt2ImgParams(prompt=prompt, seed=1, count=1, steps=args.steps, cfg=7.0, width=size,
                                   height=size, scheduler="dpmpp_2m", model=name)
            return synced(lambda: engine.run(params, (), Quiet()))[0]

        job("a"), job("b")  # warm both
        switches = {"b→a": [], "a→b": []}
        for _ in range(args.repeats):
            switches["b→a"].append(synced(lambda: engine.load("a"))[0])
            switches["a→b"].append(synced(lambda: engine.load("b"))[0])
        runs = [job("b") for _ in range(args.repeats)]
        print("switch from RAM: " + ", ".join(f"{k} {statistics.median(v) * 1000:.1f} ms" for k, v in switches.items())
              + f"; one job on b {statistics.median(runs):.2f} s")
        gpu = f", GPU allocated {torch.cuda.memory_allocated(device) / MiB:.0f} MiB" if device.type == "cuda" else ""
        print(f"resident with both loaded: {resident() / MiB:.0f} MiB ({(resident() - before) / MiB:+.0f} MiB for the "
              f"two models){gpu}")

        model = engine.load("a")
        cache = LoraCache()
        use = [(LoraUse("style", 1.0), lora)]
        first_apply = synced(lambda: apply_loras(model.txt2img, use, cache))[0]
        first_remove = synced(lambda: remove_loras(model.txt2img))[0]
        cached, removed = [], []
        for _ in range(args.repeats):
            cached.append(synced(lambda: apply_loras(model.txt2img, use, cache))[0])
            removed.append(synced(lambda: remove_loras(model.txt2img))[0])
        plain = statistics.median([job("a") for _ in range(args.repeats)])
        tagged = statistics.median([job("a", "a lighthouse at dusk <lora:style:1>") for _ in range(args.repeats)])
        print(f"LoRA rank {args.rank} ({lora.stat().st_size / MiB:.1f} MiB): first load {first_apply * 1000:.0f} ms, "
              f"cached {statistics.median(cached) * 1000:.0f} ms, off {statistics.median(removed) * 1000:.0f} ms "
              f"(first off {first_remove * 1000:.0f} ms); a job {plain:.2f} s without, {tagged:.2f} s with it "
              f"(load and removal included)")


if __name__ == "__main__":
    main()
