"""Speed and memory of each memory profile, against diffusers configured by hand, in one run.

    python benchmarks/gpu.py                       # an SD 1.5-sized model on the GPU, 512², 30 steps
    python benchmarks/gpu.py --device cpu --tiny   # the tiny model on the CPU (what the test suite runs)

The model is built from configs with random weights: SD 1.5's UNet (320/640/1280/1280, cross-attention
768), a CLIP-L-sized text encoder and the SD VAE — the real model's compute, nothing downloaded. For
each profile and batch size it prints seconds per image, UNet iterations per second and peak VRAM for
easel's engine and for a plain diffusers pipeline set up the way its docs recommend for the same
memory goal, measured interleaved, and their ratio (> 1: easel is faster). Then:

- idle: how long the GPU waits between consecutive jobs through easel's queue (saving, recording,
  the next job's start), as a share of the time it draws (target < 2 %);
- switch: the extra time of the first job after a change of kind (text→image → image→image →
  sketch → text→image) over a second job of the same kind, per offloading profile.

Peak VRAM is torch.cuda.max_memory_allocated during the call, less what other pipelines held on the
card at the time; on the CPU it is shown as "-".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.config import GenerationConfig, SketchConfig  # noqa: E402
from generation.diffusion import DiffusionEngine, pick_device  # noqa: E402
from generation.diffusion.memory import plan_memory  # noqa: E402
from generation.schedulers import SCHEDULERS  # noqa: E402
from generation.tiny import make_tiny_controlnet, make_tiny_model, write_tokenizer_files  # noqa: E402
from storage.params import Img2ImgParams, SketchParams, Txt2ImgParams

import diffusers  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic light"
MiB = 2**20


def make_sd15_sized(folder: Path) -> Path:
    """SD 1.5's architecture with random weights, saved in fp16, plus a ControlNet of the same shape."""
    from diffusers import AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_attention_heads=12, num_hidden_layers=12,
                                                max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1))
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))  # a byte-level vocabulary: the same 77-token sequences as CLIP's
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder / "model")
    ControlNetModel.from_unet(unet).to(torch.float16).save_pretrained(folder / "controlnet")
    return folder / "model"


class Timer:
    """A Progress that notes when each step ends; it/s comes from the steps, not the whole call."""

    cancelled = False
    wants_preview = False  # as for a console or Telegram job; Discord's previews add a GPU wait every 5 steps

    def __init__(self) -> None:
        self.times: list[float] = []

    def step(self, done: int, total: int, preview) -> None:
        self.times.append(time.perf_counter())

    def rate(self) -> float:
        spans = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / spans if spans > 0 else float("nan")


def hand_pipeline(model: Path, profile: str, device: torch.device, dtype: torch.dtype):
    """diffusers as its docs set it up for each memory goal (fp16, SDPA, slicing, offload)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    spec = SCHEDULERS["dpmpp_2m"]
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(pipe.scheduler.config, **spec.options)
    offload = device.type == "cuda"
    if profile in ("balanced", "low", "minimal"):
        pipe.vae.enable_slicing()
    if profile == "minimal":
        pipe.enable_attention_slicing("max")
    if profile == "low" and offload:
        pipe.enable_model_cpu_offload(device=device)
    elif profile == "minimal" and offload:
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def resident_bytes(modules) -> int:
    """Bytes of weights of these modules that sit on a CUDA card now."""
    total = 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.device.type == "cuda":
                total += tensor.numel() * tensor.element_size()
    return total


def measure(call, device: torch.device, own_modules) -> tuple[float, float, float | None]:
    """(seconds, it/s, peak MiB of this pipeline alone) of one call."""
    timer = Timer()
    if device.type == "cuda":
        torch.cuda.synchronize()
        others = torch.cuda.memory_allocated() - resident_bytes(own_modules)
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    call(timer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - others) / MiB if device.type == "cuda" else None
    return seconds, timer.rate(), peak


def job(kind: str, args, batch: int, seed: int = 1):
    common = dict(prompt=PROMPT, seed=seed, count=batch, steps=args.steps, cfg=7.0, width=args.size,
                  height=args.size, scheduler="dpmpp_2m")
    if kind == "txt2img":
        return Txt2ImgParams(**common)
    if kind == "img2img":
        return Img2ImgParams(**common, strength=1.0, input_sha256="0" * 64)  # strength 1: all the steps run
    return SketchParams(**common, input_sha256="0" * 64, control_sha256="1" * 64)


def drawing(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    pen = ImageDraw.Draw(image)
    pen.rectangle((size // 5, size * 2 // 5, size * 4 // 5, size * 9 // 10), outline="white", width=max(2, size // 100))
    return image


def speed_table(args, model: Path, controlnet: Path, device: torch.device) -> dict[str, DiffusionEngine]:
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    # "speed+compile": easel with [generation] compile = true, against the same plain diffusers as "speed".
    engines = {p: DiffusionEngine(GenerationConfig(model=str(model), device=device.type, memory=p.split("+")[0],
                                                   compile=p.endswith("+compile")),
                                  SketchConfig(controlnet=str(controlnet))) for p in args.profiles}
    hands = {p: hand_pipeline(model, p.split("+")[0], device, dtype) for p in args.profiles}
    rows: dict[tuple[str, int], dict[str, list]] = {}
    on_card: list = [None]  # the one resident pipeline on the card now: a home card holds only one

    def bring(owner) -> None:
        """Put this pipeline's weights on the card and every other resident one back on the host
        (outside the timing), so the benchmark runs on an 8 GB card as it does on a big one."""
        if device.type != "cuda" or on_card[0] is owner:
            return
        if isinstance(owner, DiffusionEngine):
            owner.load()
        for other in (*engines.values(), *hands.values()):
            if other is not owner and resident(other):
                pipes(other, "cpu")
        if resident(owner):
            pipes(owner, device)
        on_card[0] = owner
        torch.cuda.empty_cache()

    def resident(owner) -> bool:
        if isinstance(owner, DiffusionEngine):
            return owner._plan is not None and owner._plan.offload == "none"
        return not any(hasattr(m, "_hf_hook") for m in (owner.unet, owner.text_encoder, owner.vae))

    def pipes(owner, where) -> None:
        if isinstance(owner, DiffusionEngine):
            move_engine(owner, where)
        else:
            owner.to(where)

    def easel_call(profile: str, batch: int):
        engine = engines[profile]
        return (lambda timer: engine.run(job("txt2img", args, batch), (), timer)), engine

    def hand_call(profile: str, batch: int):
        pipe = hands[profile]

        def call(timer: Timer) -> None:
            generators = [torch.Generator("cpu").manual_seed(1 + k) for k in range(batch)]
            pipe(PROMPT, num_inference_steps=args.steps, height=args.size, width=args.size, guidance_scale=7.0,
                 num_images_per_prompt=batch, generator=generators,
                 callback_on_step_end=lambda p, i, t, kw: (timer.step(i + 1, args.steps, None), kw)[1])
        return call, pipe

    def modules(owner) -> list:
        pipe = owner._txt2img if isinstance(owner, DiffusionEngine) else owner
        return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None), getattr(pipe, "text_encoder", None))
                if m is not None]

    def attempt(make, profile: str, batch: int, timed: bool):
        call, owner = make(profile, batch)
        bring(owner)
        try:
            if timed:
                return measure(call, device, modules(owner))
            call(Timer())
        except torch.OutOfMemoryError:  # this profile does not fit this card at this batch: say so
            torch.cuda.empty_cache()
            return None
        return ()

    for profile in args.profiles:  # warm-up: loads, first kernels and allocator growth are not measured
        for batch in args.batches:
            attempt(easel_call, profile, batch, timed=False)
            attempt(hand_call, profile, batch, timed=False)
    for _ in range(args.repeats):
        for profile in args.profiles:
            for batch in args.batches:
                for side, make in (("easel", easel_call), ("hand", hand_call)):
                    measured = attempt(make, profile, batch, timed=True)
                    row = rows.setdefault((profile, batch), {})
                    row.setdefault(side, []).append(
                        None if measured is None else (measured[0] / batch, measured[1], measured[2]))

    print(f"{'profile':13} {'batch':>5} {'easel s/img':>11} {'it/s':>7} {'peak MiB':>9}  "
          f"{'hand s/img':>10} {'it/s':>7} {'peak MiB':>9}  {'speed ratio':>11}")
    for (profile, batch), sides in rows.items():
        cells, per = [], {}
        for side in ("easel", "hand"):
            runs = sides[side]
            if any(run is None for run in runs):
                cells.append(f"{'out of memory':>29}")
                continue
            per[side] = statistics.median(s for s, _, _ in runs)
            rate = statistics.median(r for _, r, _ in runs)
            peaks = [p for _, _, p in runs if p is not None]
            peak = f"{max(peaks):9.0f}" if peaks else f"{'-':>9}"
            cells.append(f"{per[side]:{11 if side == 'easel' else 10}.3f} {rate:7.2f} {peak}")
        ratio = f"{per['hand'] / per['easel']:11.2f}" if len(per) == 2 else f"{'-':>11}"
        print(f"{profile:13} {batch:5d} {cells[0]}  {cells[1]}  {ratio}")
    if device.type == "cuda":  # the hand pipelines are done with: free the card for what follows
        for hand in hands.values():
            if resident(hand):
                hand.to("cpu")
        hands.clear()
        torch.cuda.empty_cache()
    return engines


def move_engine(engine: DiffusionEngine, where) -> None:
    """Move a non-offloading engine's weights (and its ControlNet's) to `where`."""
    if engine._plan is None or engine._plan.offload != "none":
        return
    engine._txt2img.to(where)
    for module in engine._active.side_modules():
        module.to(where)


def switch_costs(args, engines: dict[str, DiffusionEngine], size: int) -> None:
    """Extra seconds of the first job of a new kind over a second job of that kind, same engine."""
    sequence = ["txt2img", "txt2img", "img2img", "img2img", "sketch", "sketch", "txt2img", "txt2img"]
    sketch = drawing(size)
    for profile, engine in engines.items():
        if torch.cuda.is_available():  # one resident engine on the card at a time, as in the table
            for other in engines.values():
                if other is not engine:
                    move_engine(other, "cpu")
            move_engine(engine, engine._device)
            torch.cuda.empty_cache()
        times = []
        for kind in sequence:
            inputs = () if kind == "txt2img" else (sketch,)
            start = time.perf_counter()
            engine.run(job(kind, args, 1), inputs, Timer())
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        costs = [f"{sequence[i - 1]}→{sequence[i]} {times[i] - times[i + 1]:+.3f} s" for i in (2, 4, 6)]
        print(f"switch, {profile:13} (offload {engine._plan.offload}): " + ", ".join(costs))


async def queue_idle(args, model: Path, data: Path, device: torch.device, jobs: int) -> None:
    """GPU idle between consecutive jobs through the real queue, history and image store."""
    from generation.queue import JobQueue, QueueLimits
    from storage.history import History
    from storage.images import ImageStore
    from storage.records import Owner

    engine = DiffusionEngine(GenerationConfig(model=str(model), device=device.type, memory=args.profiles[0].split("+")[0]))
    spans: list[tuple[float, float]] = []

    class Clocked:
        """The engine, with the time each run starts and ends on the GPU thread noted."""

        def unavailable(self):
            return engine.unavailable()

        def run_info(self):
            return engine.run_info()

        def run(self, params, inputs, progress):
            start = time.perf_counter()
            result = engine.run(params, inputs, progress)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spans.append((start, time.perf_counter()))
            return result

    async with await History.open(data / "easel.db") as history:
        queue = JobQueue(history, ImageStore(data), {"txt2img": Clocked()}, QueueLimits(99, 99))
        async with queue:
            await queue.run_on_gpu(engine.run, job("txt2img", args, 1), (), Timer())  # load and warm up
            done = asyncio.Event()
            finished = []

            def listen(event) -> None:
                if event.finished:
                    finished.append(event.job.id)
                    if len(finished) == jobs:
                        done.set()

            queue.subscribe(listen)
            for k in range(jobs):
                await queue.submit(Owner(platform="bench", user_id=str(k % 3)), job("txt2img", args, 1, seed=k))
            await asyncio.wait_for(done.wait(), timeout=3600)
    busy = sum(end - start for start, end in spans)
    idle = [spans[k + 1][0] - spans[k][1] for k in range(len(spans) - 1)]
    print(f"idle between {jobs} queued jobs: {statistics.median(idle) * 1000:.1f} ms median gap, "
          f"{sum(idle) / busy * 100:.2f} % of busy time ({busy / jobs:.3f} s per job; target < 2 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model instead of an SD 1.5-sized one")
    parser.add_argument("--size", type=int, default=None, help="default 512 (64 with --tiny)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--profiles", default="speed,balanced,low,minimal",
                        help="add speed+compile to measure [generation] compile = true (compiles first: minutes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queue-jobs", type=int, default=8)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.profiles = args.profiles.split(",")
    args.size = args.size or (64 if args.tiny else 512)
    diffusers.utils.logging.disable_progress_bar()
    import transformers
    transformers.utils.logging.disable_progress_bar()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    print(f"device {name}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
          f"{'tiny' if args.tiny else 'SD 1.5-sized'} model, {args.size}x{args.size}, {args.steps} steps, "
          f"DPM++ 2M, median of {args.repeats} interleaved runs")
    for profile in args.profiles:
        plan = plan_memory(profile.split("+")[0], device.type, total)
        print(f"  {profile}: {plan.dtype}, attention {plan.attention}, VAE slicing {plan.vae_slicing}, "
              f"offload {plan.offload}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.tiny:
            model = make_tiny_model(folder / "model")
            controlnet = make_tiny_controlnet(model, folder / "controlnet")
        else:
            model, controlnet = make_sd15_sized(folder), folder / "controlnet"
        engines = speed_table(args, model, controlnet, device)
        switch_costs(args, engines, args.size)
        for engine in engines.values():  # free the card for the queue's own engine
            move_engine(engine, "cpu")
        del engines
        if device.type == "cuda":
            torch.cuda.empty_cache()
        asyncio.run(queue_idle(args, model, folder / "data", device, args.queue_jobs))
    # The upscaler /upscale and --hires run on the card beside the model: its speed and peak, RealESRGAN_x4plus-
    # shaped (random weights), fp16 on a GPU as the engine runs it. Its own process: its peak is its own.
    shape = ["--net", "tiny", "--size", "64"] if args.tiny else ["--net", "esrgan", "--size", "512"]
    half = ["--half"] if device.type == "cuda" else []
    print("upscaler:", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("upscale.py")), *shape, "--device", str(device), *half],
                   check=False)
    # The model library: cold loads, a switch between two models held in RAM (a RAM↔card copy here), a LoRA.
    print("models:", flush=True)
    library = ["--shape", "tiny"] if args.tiny else ["--shape", "sd15", "--size", "512", "--steps", "20"]
    subprocess.run([sys.executable, str(Path(__file__).with_name("models.py")), *library, "--device", str(device)],
                   check=False)
    # Animations: seconds per frame of each mode and what the PNGs and the MP4 add, 512², 20 steps, 12 frames.
    print("animations:", flush=True)
    frames = ["--shape", "tiny"] if args.tiny else ["--shape", "sd15", "--size", "512", "--steps", "20"]
    subprocess.run([sys.executable, str(Path(__file__).with_name("animate.py")), *frames, "--device", str(device)],
                   check=False)


if __name__ == "__main__":
    main()
