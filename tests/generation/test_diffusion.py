"""DiffusionEngine on a real (tiny, random-weight) diffusers pipeline: seeds, steps, schedulers, cancel, errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

import generation.prompts
from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine, pick_device
from generation.engine import JobCancelled, ModelLoadError
from generation.prompts import encode_prompts
from generation.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from storage.errors import EaselError
from storage.params import JobParams
from tests.conftest import params
from tests.helpers import Recorder, pixels


def differ(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> DiffusionEngine:
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    # A different size from the job's on purpose: the engine resizes it.
    array = np.zeros((80, 100, 3), np.uint8)
    array[:, :50] = (200, 40, 40)
    array[:, 50:] = (30, 60, 220)
    return Image.fromarray(array, "RGB")


def draw(engine: DiffusionEngine, job: JobParams, init: Image.Image | None = None, progress: Recorder | None = None):
    return engine.run(job, () if init is None else (init,), progress or Recorder())


# ---- seeds ----------------------------------------------------------------------------------

def test_same_seed_gives_identical_pixels(engine: DiffusionEngine) -> None:
    first = draw(engine, params(seed=42))
    second = draw(engine, params(seed=42))
    assert first.images[0].size == (64, 64) and first.images[0].mode == "RGB"
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))


def test_same_seed_gives_identical_pixels_after_a_fresh_load(engine: DiffusionEngine, tiny_model: Path) -> None:
    fresh = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))
    assert np.array_equal(pixels(draw(engine, params()).images[0]), pixels(draw(fresh, params()).images[0]))


def test_different_seed_gives_different_pixels(engine: DiffusionEngine) -> None:
    assert differ(draw(engine, params(seed=42)).images[0], draw(engine, params(seed=43)).images[0]) > 2


def test_a_batch_uses_seeds_s_and_s_plus_1_and_each_image_redraws_alone(engine: DiffusionEngine) -> None:
    batch = draw(engine, params(seed=7, count=2))
    assert batch.seeds == (7, 8) and len(batch.images) == 2
    alone = [draw(engine, params(seed=seed)).images[0] for seed in (7, 8)]
    for k in range(2):
        # batched matmuls may round differently by a least significant bit, nothing more
        assert np.abs(pixels(batch.images[k]) - pixels(alone[k])).max() <= 2
    assert differ(batch.images[0], batch.images[1]) > 2


def test_prompt_and_negative_prompt_both_reach_the_model(engine: DiffusionEngine) -> None:
    plain = draw(engine, params()).images[0]
    assert differ(plain, draw(engine, params(prompt="a red bicycle")).images[0]) > 0.5
    assert differ(plain, draw(engine, params(negative_prompt="blurry, watermark")).images[0]) > 0.5


# ---- steps and progress ---------------------------------------------------------------------

def test_txt2img_reports_every_step(engine: DiffusionEngine) -> None:
    progress = Recorder()
    draw(engine, params(steps=5), progress=progress)
    assert progress.steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert progress.previews == [None] * 5  # preview_every = 0


def test_previews_every_n_steps_but_not_at_the_end(tiny_model: Path) -> None:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=2))
    progress = Recorder()
    engine.run(params(steps=6), (), progress)
    with_preview = [done for (done, _), preview in zip(progress.steps, progress.previews) if preview is not None]
    assert with_preview == [2, 4]  # step 6 is the final image itself
    preview = progress.previews[1]
    assert preview.mode == "RGB" and preview.size == (256, 256)  # the 8x8 latent, scaled up


def test_img2img_runs_steps_times_strength(engine: DiffusionEngine, init_image: Image.Image) -> None:
    progress = Recorder()
    job = params(kind="img2img", steps=10, strength=0.5)
    result = draw(engine, job, init_image, progress)
    assert progress.steps == [(k, 5) for k in range(1, 6)]
    assert len(progress.steps) == job.effective_steps
    assert result.images[0].size == (64, 64)


def test_img2img_is_reproducible_and_follows_its_input(engine: DiffusionEngine, init_image: Image.Image) -> None:
    job = params(kind="img2img", steps=4, strength=0.5)
    first = draw(engine, job, init_image).images[0]
    assert np.array_equal(pixels(first), pixels(draw(engine, job, init_image).images[0]))
    # random VAE weights keep little of the input, but an input that is ignored would change nothing
    other_input = init_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert differ(first, draw(engine, job, other_input).images[0]) > 0.3


def test_img2img_without_an_input_image_is_a_bug(engine: DiffusionEngine) -> None:
    with pytest.raises(ValueError, match="with 0 input images instead of 1"):
        draw(engine, params(kind="img2img", strength=0.5))


def test_txt2img_after_img2img_still_matches(engine: DiffusionEngine, init_image: Image.Image) -> None:
    before = draw(engine, params()).images[0]
    draw(engine, params(kind="img2img", strength=0.7), init_image)
    assert np.array_equal(pixels(before), pixels(draw(engine, params()).images[0]))


# ---- schedulers -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs(engine: DiffusionEngine, name: str) -> None:
    progress = Recorder()
    result = draw(engine, params(scheduler=name, steps=3), progress=progress)
    spec = SCHEDULERS[name]
    scheduler = engine._txt2img.scheduler
    assert type(scheduler) is getattr(diffusers, spec.class_name)
    for key, value in spec.options.items():
        assert scheduler.config[key] == value
    assert result.images[0].size == (64, 64)
    assert progress.steps and progress.steps[-1][0] == progress.steps[-1][1]
    assert np.asarray(result.images[0]).std() > 0


@pytest.mark.parametrize("name", ["euler_a", "dpmpp_2m_karras", "ddim"])
def test_every_kind_of_scheduler_is_seeded(engine: DiffusionEngine, name: str) -> None:
    job = params(scheduler=name, seed=5)
    assert np.array_equal(pixels(draw(engine, job).images[0]), pixels(draw(engine, job).images[0]))


def test_a_scheduler_choice_does_not_leak_into_the_next_job(engine: DiffusionEngine, tiny_model: Path) -> None:
    # Regression: each job's scheduler used to be built from the previous job's config, so Karras
    # sigmas (and the like) stuck, and the same seed drew different pixels depending on history.
    reference = {
        name: draw(DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0)), params(scheduler=name))
        for name in ("dpmpp_2m", "euler")
    }
    for previous in ("dpmpp_2m_karras", "unipc", "pndm"):
        draw(engine, params(scheduler=previous))
        for name, expected in reference.items():
            got = draw(engine, params(scheduler=name)).images[0]
            assert np.array_equal(pixels(got), pixels(expected.images[0])), (previous, name)


# ---- cancelling -----------------------------------------------------------------------------

def test_cancel_while_running_stops_at_the_next_step(engine: DiffusionEngine) -> None:
    progress = Recorder(cancel_after=2)
    with pytest.raises(JobCancelled) as caught:
        draw(engine, params(steps=50), progress=progress)
    assert [done for done, _ in progress.steps] == [1, 2]
    assert isinstance(caught.value, EaselError)
    # the interrupt flag does not stick: the next job runs all its steps
    progress = Recorder()
    draw(engine, params(steps=3), progress=progress)
    assert len(progress.steps) == 3


def test_a_cancel_that_arrives_with_the_last_step_keeps_the_finished_images(engine: DiffusionEngine) -> None:
    progress = Recorder(cancel_after=3)  # true only once the third and last step has been reported
    result = draw(engine, params(steps=3), progress=progress)
    assert len(result.images) == 1 and progress.cancelled
    assert not np.array_equal(pixels(result.images[0]), pixels(draw(engine, params(steps=2)).images[0]))
    assert np.array_equal(pixels(result.images[0]), pixels(draw(engine, params(steps=3)).images[0]))


def test_cancelled_before_start_loads_nothing(tmp_path: Path) -> None:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tmp_path / "not-there")))
    with pytest.raises(JobCancelled):
        engine.run(params(), (), Recorder(cancel_after=0))


# ---- loading errors -------------------------------------------------------------------------

def load_error(model: str) -> str:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=model))
    with pytest.raises(ModelLoadError) as caught:
        engine.run(params(), (), Recorder())
    # a failed load leaves the engine unloaded: the next job tries again and fails the same way
    with pytest.raises(ModelLoadError) as again:
        engine.load()
    assert str(again.value) == str(caught.value)
    assert isinstance(caught.value, EaselError)
    return str(caught.value)


def test_a_model_path_that_does_not_exist(tmp_path: Path) -> None:
    model = str(tmp_path / "models" / "sd15")
    text = load_error(model)
    assert text.startswith(f"model folder {model!r} does not exist; fix [generation] model in your config: ")
    assert "`easel make-tiny-model tiny-model`" in text


def test_a_checkpoint_file_that_does_not_exist(tmp_path: Path) -> None:
    model = str(tmp_path / "v1-5-pruned-emaonly.safetensors")
    text = load_error(model)
    assert text.startswith(f"model file {model!r} does not exist; fix [generation] model in your config: ")
    assert "`easel make-tiny-model tiny-model`" in text


def test_a_folder_that_is_not_a_diffusers_model(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    text = load_error(str(folder))
    assert repr(str(folder)) in text and "no model_index.json" in text


def test_a_diffusers_folder_with_missing_weights(tmp_path: Path, tiny_model: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    shutil.rmtree(broken / "unet")
    text = load_error(str(broken))
    assert text.startswith(f"could not load model {str(broken)!r}: ")


def test_a_hub_id_that_is_not_downloaded_in_offline_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # More causes (no network, no such repo, a broken folder…) and the log: tests/generation/test_model_load.py.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    text = load_error("easel-tests/no-such-model")
    assert text.startswith(
        "could not load model 'easel-tests/no-such-model': Hugging Face offline mode is on (HF_HUB_OFFLINE is set) "
        "and the model is not downloaded yet"
    )
    assert "connect once so the first download (about 4 GB for SD 1.5) can finish" in text
    assert "Traceback" not in text and "\n" not in text and len(text) < 900


def test_something_that_is_neither_path_nor_hub_id() -> None:
    text = load_error("my favourite model")
    assert "'my favourite model' is neither a folder" in text


# ---- how it ran -----------------------------------------------------------------------------

def test_loading_keeps_the_hub_download_bar(engine: DiffusionEngine) -> None:
    import huggingface_hub

    draw(engine, params(steps=1))
    assert not huggingface_hub.utils.are_progress_bars_disabled()  # a first run downloads GBs


def test_run_info_records_the_plan(engine: DiffusionEngine, tiny_model: Path) -> None:
    run = draw(engine, params()).run
    assert run.model == str(tiny_model)
    unet_weights = next((tiny_model / "unet").glob("*.safetensors"))
    assert run.model_hash == hashlib.sha256(unet_weights.read_bytes()).hexdigest()  # a folder's: its UNet's weights
    assert run.family == "sd1" and run.vae is None
    assert (run.memory_profile, run.attention, run.dtype, run.device) == ("speed", "sdpa", "float32", "cpu")
    assert run.diffusers_version == diffusers.__version__ and run.torch_version == torch.__version__


def test_minimal_profile_on_cpu_slices_but_draws_the_same_picture(engine: DiffusionEngine, tiny_model: Path) -> None:
    minimal = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), memory="minimal", preview_every=0))
    result = minimal.run(params(), (), Recorder())
    assert (result.run.memory_profile, result.run.attention, result.run.dtype) == ("minimal", "sliced", "float32")
    pipe = minimal._txt2img
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling and not result.run.vae_tiling  # no card to run out of
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    speed = draw(engine, params()).images[0]
    assert np.abs(pixels(result.images[0]) - pixels(speed)).max() <= 2


def test_the_engine_belongs_to_one_thread(tiny_model: Path) -> None:
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))
    engine.load()  # this thread now owns it
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            engine.run(params(), (), Recorder())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "two threads" in str(errors[0])


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="torch sees no CUDA GPU"):
            pick_device("cuda")
        if not torch.backends.mps.is_available():
            assert pick_device("auto") == torch.device("cpu")


def test_speed_and_balanced_draw_identical_pixels_where_tiling_is_not_needed(tiny_model: Path) -> None:
    # 704x384 (--ar 16:9) is past the VAE's tile size, so tiling would change the picture.
    job = params(width=704, height=384)
    drawn = {
        memory: DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), memory=memory, preview_every=0)).run(job, (), Recorder())
        for memory in ("speed", "balanced")
    }
    assert np.array_equal(pixels(drawn["speed"].images[0]), pixels(drawn["balanced"].images[0]))
    assert not drawn["balanced"].run.vae_tiling and drawn["balanced"].run.memory_profile == "balanced"


def test_a_job_that_asks_for_tiling_gets_it_records_it_and_repeats_its_pixels(engine: DiffusionEngine) -> None:
    tiled = draw(engine, params(width=704, height=384, vae_tiling=True))
    assert tiled.run.vae_tiling
    again = draw(engine, params(width=704, height=384, vae_tiling=True))
    plain = draw(engine, params(width=704, height=384))
    assert np.array_equal(pixels(tiled.images[0]), pixels(again.images[0]))
    assert not plain.run.vae_tiling and differ(tiled.images[0], plain.images[0]) > 0
    assert not engine._txt2img.vae.use_tiling  # the next job decides afresh


# ---- library drift --------------------------------------------------------------------------
#
# If an upgrade of torch, diffusers or transformers changes what a seed draws, old seeds no longer redraw
# their old pictures: this guard notices, and the README says from which versions. It pins aggregates
# (mean, rms, a fixed projection) of each stage on fixed inputs: the prompt encoding with emphasis, one
# UNet call, the default scheduler's timesteps and sigmas, a sampler run with a fixed linear stand-in for
# the UNet, the noise the CPU generator draws for a seed, one VAE decode, and the whole job before its
# pixels are rounded to 8 bits. Never single pixels: those move by whole levels when a rounding step flips.
#
# Each tolerance is at least 100x what its values moved when every weight or input was perturbed by a
# relative 1e-6, or when the kernels changed (ATEN_CPU_CAPABILITY avx512, avx2, default; 1 or 2 threads):
# at most 5.3e-7 (2.7e-6 for the sampler, whose output is 3x larger and linear in its input; 8.2e-8 for
# the image). And each is below what a real change of behaviour moves: the tests after this one change a
# scheduler default, the emphasis rule, the VAE's scaling factor and torch's attention scale, and expect
# the guard to name the stages that moved. Pinned with torch 2.13.0, diffusers 0.42.1, transformers 5.25.

DRIFT_JOB = dict(prompt="a (red:1.3) lighthouse at dusk", negative_prompt="blurry", seed=1234, steps=4,
                 cfg=7.0, scheduler=DEFAULT_SCHEDULER, width=64, height=64)

PINNED: dict[str, float] = {
    "prompt.rms": 1.0133405, "prompt.probe": -0.041824288, "prompt.emphasis": 0.059215773,
    "negative.rms": 0.99999051, "negative.probe": -0.077765593,
    "unet.mean": 0.024154762, "unet.rms": 0.31523556, "unet.probe": -0.056396221,
    "timestep[0]": 999, "timestep[1]": 749, "timestep[2]": 500, "timestep[3]": 250,
    "sigma[0]": 14.614647, "sigma[1]": 4.0817308, "sigma[2]": 1.6182797, "sigma[3]": 0.69579947, "sigma[4]": 0.0,
    "noise[0]": -0.11171857, "noise[1]": -0.49659011, "noise[2]": 0.16307370, "noise[3]": -0.88168776,
    "noise.mean": -0.058185623, "noise.rms": 0.96066136, "noise.probe": -0.36472024,
    "sampler.mean": -0.73573597, "sampler.rms": 3.0104136, "sampler.probe": -1.1389046,
    "vae.mean": -0.055514206, "vae.rms": 0.41726682, "vae.probe": -0.084646754,
    "image.mean": 0.48224571, "image.rms": 0.51124048, "image.probe": 0.0051973031,
}
# Absolute, per stage: every pinned value is an aggregate of order 0.005-15 that rounding moves by 1e-7-ish.
TOLERANCE: dict[str, float] = {
    "prompt": 1e-4, "negative": 1e-4, "unet": 1e-4, "timestep": 0, "sigma": 1e-4, "noise": 1e-4,
    "sampler": 1e-3, "vae": 1e-4, "image": 1e-5,
}


def stage(name: str) -> str:
    return re.split(r"[.\[]", name, maxsplit=1)[0]


def noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """What the CPU generator draws for a seed, as the engine draws initial latents."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def summarise(name: str, tensor: torch.Tensor) -> dict[str, float]:
    """Mean, rms and a fixed projection of a sizeable tensor: every element moves them, none by much."""
    flat = tensor.detach().double().flatten()
    wave = torch.cos(torch.arange(flat.numel(), dtype=torch.float64) * 0.7)  # order-sensitive, unlike mean and rms
    return {f"{name}.mean": flat.mean().item(), f"{name}.rms": flat.square().mean().sqrt().item(),
            f"{name}.probe": (flat @ wave).item() / flat.numel() ** 0.5}


def measure_drift(engine: DiffusionEngine) -> dict[str, float]:
    """The pinned quantities, measured on the engine's model the way the engine itself runs a job."""
    engine.load()
    pipe = engine._txt2img
    spec = SCHEDULERS[DEFAULT_SCHEDULER]
    scheduler = getattr(diffusers, spec.class_name).from_config(engine._active.scheduler_config, **spec.options)
    got: dict[str, float] = {}
    with torch.inference_mode():
        positive, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, DRIFT_JOB["prompt"],
                                            DRIFT_JOB["negative_prompt"], "cpu", torch.float32)
        plain, _ = encode_prompts(pipe.tokenizer, pipe.text_encoder, "a red lighthouse at dusk", "", "cpu",
                                  torch.float32)
        # Each token vector of the tiny encoder has mean 0 (its final norm has no bias): the means of the
        # embeddings are rounding noise, and are not pinned.
        embeddings = summarise("prompt", positive) | summarise("negative", negative)
        got |= {name: value for name, value in embeddings.items() if not name.endswith(".mean")}
        got["prompt.emphasis"] = ((positive - plain).norm() / plain.norm()).item()

        unet = pipe.unet(noise(1, (1, 4, 8, 8)), 500, encoder_hidden_states=noise(2, (1, 77, 32))).sample
        got |= summarise("unet", unet)

        scheduler.set_timesteps(DRIFT_JOB["steps"])
        got |= {f"timestep[{k}]": float(t) for k, t in enumerate(scheduler.timesteps)}
        got |= {f"sigma[{k}]": float(s) for k, s in enumerate(scheduler.sigmas)}
        start = noise(DRIFT_JOB["seed"], (1, 4, 8, 8))
        got |= {f"noise[{k}]": float(x) for k, x in enumerate(start.flatten()[:4])} | summarise("noise", start)
        latents = start * scheduler.init_noise_sigma
        for t in scheduler.timesteps:  # a linear stand-in for the UNet: the solver's arithmetic, well conditioned
            latents = scheduler.step(0.5 * scheduler.scale_model_input(latents, t) + 0.1, t, latents).prev_sample
        got |= summarise("sampler", latents)

        decoded = pipe.vae.decode(noise(3, (1, 4, 8, 8)) / pipe.vae.config.scaling_factor).sample
        got |= summarise("vae", decoded)
    got |= summarise("image", torch.from_numpy(unrounded_image(engine)))
    return got


def unrounded_image(engine: DiffusionEngine) -> np.ndarray:
    """DRIFT_JOB drawn as the engine draws it, but before the rounding to 8 bits that would hide small changes."""
    job = params(**DRIFT_JOB)
    pipe = engine._txt2img
    spec = SCHEDULERS[job.scheduler]
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(engine._active.scheduler_config, **spec.options)
    positive, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, job.prompt, job.negative_prompt,
                                        "cpu", torch.float32)
    with torch.inference_mode():
        return pipe(prompt_embeds=positive, negative_prompt_embeds=negative, height=job.height, width=job.width,
                    num_inference_steps=job.steps, guidance_scale=job.cfg,
                    generator=[torch.Generator("cpu").manual_seed(job.seed)], output_type="np").images[0]


def drift(measured: dict[str, float]) -> dict[str, str]:
    """The pinned quantities that moved past their stage's tolerance: name -> what it is and what it was."""
    moved = {}
    for name, value in PINNED.items():
        tolerance = TOLERANCE[stage(name)]
        if not abs(measured[name] - value) <= tolerance:
            moved[name] = f"{measured[name]:.8g}, pinned {value:.8g} ± {tolerance:g}"
    return moved


def test_the_libraries_compute_what_they_computed_when_pinned(engine: DiffusionEngine) -> None:
    measured = measure_drift(engine)
    assert measured.keys() == PINNED.keys()
    assert not drift(measured), drift(measured)


def test_the_same_job_twice_draws_identical_pixels_and_the_guard_measures_them(engine: DiffusionEngine) -> None:
    # Exact on any one machine, whatever its kernels: nothing in a job may depend on history or time.
    first, second = (pixels(draw(engine, params(**DRIFT_JOB)).images[0]) for _ in range(2))
    assert np.array_equal(first, second)
    # and the guard's unrounded image is that picture, so it watches what users get
    assert np.array_equal(first, (unrounded_image(engine) * 255).round().astype(np.int16))


# The guard must fail when behaviour really changes, and name the stages that moved: `must` all move,
# nothing outside `must | may` does.

def changed_model(tiny_model: Path, tmp_path: Path, config: str, **change: object) -> DiffusionEngine:
    """An engine on a copy of the tiny model with one config file changed, as a new library default would."""
    copy = tmp_path / "changed"
    shutil.copytree(tiny_model, copy)
    path = copy / config
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(copy), preview_every=0))


def assert_moved(engine: DiffusionEngine, must: set[str], may: Iterable[str] = ()) -> None:
    moved = drift(measure_drift(engine))
    stages = {stage(name) for name in moved}
    assert must <= stages <= must | set(may), moved


SCHEDULER_CHANGES = [  # (option, value, must, may)
    ("timestep_spacing", "leading", {"timestep", "sigma", "sampler", "image"}, set()),
    ("timestep_spacing", "trailing", {"timestep", "sigma"}, {"sampler", "image"}),  # only 500 -> 499, 250 -> 249
    ("use_karras_sigmas", True, {"timestep", "sigma", "sampler", "image"}, set()),
    ("final_sigmas_type", "sigma_min", {"sigma", "sampler"}, {"image"}),
    ("solver_order", 1, {"sampler", "image"}, set()),
]


@pytest.mark.parametrize(("option", "value", "must", "may"), SCHEDULER_CHANGES,
                         ids=[f"{option}={value}" for option, value, _, _ in SCHEDULER_CHANGES])
def test_the_guard_sees_a_changed_scheduler_default(
    tiny_model: Path, tmp_path: Path, option: str, value: object, must: set[str], may: set[str],
) -> None:
    engine = changed_model(tiny_model, tmp_path, "scheduler/scheduler_config.json", **{option: value})
    assert_moved(engine, must, may)


def test_the_guard_sees_a_changed_vae_scaling_factor(tiny_model: Path, tmp_path: Path) -> None:
    assert_moved(changed_model(tiny_model, tmp_path, "vae/config.json", scaling_factor=0.13025), {"vae", "image"})


def ignore_weights(hidden: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    return hidden


def restore_mean_always(hidden: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    # The rule before MEAN_RESTORE_MIN, as A1111 has it: with the tiny encoder's zero mean it rescales the
    # embeddings by rounding noise, a factor that differs from one CPU to the next (2.6, 1.8, -4.5, ...).
    if all(weight == 1.0 for weight in weights):
        return hidden
    original = hidden.float()
    weighted = original * torch.tensor(weights)[None, :, None]
    mean = weighted.mean()
    return weighted * (original.mean() / mean) if mean != 0 else weighted


@pytest.mark.parametrize(("rule", "must", "may"), [(ignore_weights, {"prompt", "image"}, set()),
                                                   (restore_mean_always, {"prompt"}, {"image"})],
                         ids=["ignore_weights", "restore_mean_always"])
def test_the_guard_sees_a_changed_prompt_weighting(
    engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch, rule: Callable[..., torch.Tensor],
    must: set[str], may: set[str],
) -> None:
    monkeypatch.setattr(generation.prompts, "_apply_weights", rule)
    assert_moved(engine, must, may)


def test_the_guard_sees_a_changed_attention_scale(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10% hotter softmax in every attention layer, text encoder and UNet alike: a subtle change.
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def hotter(query, key, value, *args, **kwargs):
        return sdpa(query, key, value, *args, **{**kwargs, "scale": 1.1 / query.shape[-1] ** 0.5})

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", hotter)
    assert_moved(engine, {"prompt", "negative", "unet"}, {"vae", "image"})


def test_words_past_77_tokens_and_emphasis_change_the_picture(engine: DiffusionEngine) -> None:
    long = "a red lighthouse on a rocky coast at dusk, waves, gulls, " * 2
    base = draw(engine, params(prompt=long)).images[0]
    assert len(engine._txt2img.tokenizer(long).input_ids) > 77  # past what CLIP reads at once
    longer = draw(engine, params(prompt=long + "stormy sky, rain")).images[0]  # words beyond CLIP's 77
    assert differ(base, longer) > 0
    plain = draw(engine, params(prompt="red lighthouse")).images[0]
    emphasised = draw(engine, params(prompt="(red:1.5) lighthouse")).images[0]
    assert differ(plain, emphasised) > 0
    assert np.array_equal(pixels(plain), pixels(draw(engine, params(prompt="red lighthouse")).images[0]))


def test_a_compiled_unet_draws_what_the_plain_one_draws_and_compiles_once_for_repeated_jobs(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    counters.clear()
    plain = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))
    compiled = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0, compile=True))
    want = draw(plain, params(seed=5)).images[0]
    first = draw(compiled, params(seed=5)).images[0]
    graphs = counters["stats"]["unique_graphs"]
    second = draw(compiled, params(seed=6)).images[0]  # another job of the same size: no new graph
    draw(compiled, params(seed=7, kind="img2img", strength=0.9, input_sha256="0" * 64),
         Image.new("RGB", (64, 64), "gray"))  # image→image runs the same compiled UNet, not a new graph
    assert graphs >= 1 and counters["stats"]["unique_graphs"] == graphs
    unet = compiled._txt2img.unet
    assert unet.easel_compiled and compiled._active.img2img.unet is unet  # one compiled UNet, shared
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert differ(want, first) < 1.0  # compiled kernels may differ in the last bits, not in the picture
    assert differ(first, second) > 5  # and it still follows the seed
    torch._dynamo.reset()
