"""The engine contract, checked the same way for every engine and every kind it draws: a cancel takes effect at
the next step, progress counts up to its total, a seed redraws pixel for pixel, a job the engine cannot draw is
refused before any work, and after a cancelled or failed job the next one draws normally.

Tiny random-weight models built here (nothing downloaded), a few steps, 64×64: the queue relies on exactly these
promises whatever the engine, so a new engine or kind joins by adding a Case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.config import FacesConfig, GenerationConfig, SketchConfig
from generation.diffusion import DiffusionEngine
from generation.engine import Engine, EngineResult, JobCancelled
from generation.faces.engine import FaceEngine
from generation.pix2pix import UnetGenerator
from storage.params import (ActionParams, FaceParams, JobParams, PanParams, SketchParams, UpscaleParams, VaryParams,
                            ZoomParams)
from tests.conftest import params
from tests.generation.nvidia_pickle import write_tiny_faces
from tests.helpers import Recorder, pixels


def photo() -> Image.Image:
    """Two coloured halves, not the job's size: engines resize their inputs."""
    array = np.zeros((80, 100, 3), np.uint8)
    array[:, :50] = (200, 40, 40)
    array[:, 50:] = (30, 60, 220)
    return Image.fromarray(array, "RGB")


def scribble() -> Image.Image:
    """A cleaned drawing as the scribble ControlNet sees it: white lines on black."""
    image = Image.new("RGB", (64, 64), "black")
    pen = ImageDraw.Draw(image)
    pen.rectangle((12, 24, 52, 56), outline="white", width=3)
    pen.line((12, 24, 32, 6, 52, 24), fill="white", width=3)
    return image


def edges() -> Image.Image:
    """A cleaned drawing as pix2pix sees it: dark lines on white, 256×256."""
    image = Image.new("RGB", (256, 256), "white")
    pen = ImageDraw.Draw(image)
    pen.ellipse((40, 60, 210, 200), outline="black", width=2)
    return image


def sketch(seed: int, **changes: object) -> SketchParams:
    return SketchParams(prompt="a small house", seed=seed, steps=3, cfg=7.0, width=64, height=64,
                        scheduler="dpmpp_2m", input_sha256="0" * 64, control_sha256="1" * 64, **changes)


def action(kind: type[ActionParams], seed: int, **fields: object) -> ActionParams:
    """An action on a 64×64 picture (its result's size unless `fields` say otherwise)."""
    common = dict(prompt="a small house", seed=seed, steps=4, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m",
                  source_job=1, input_sha256="0" * 64)
    return kind(**{**common, **fields})


@dataclass(frozen=True)
class Case:
    """One kind on the engine that draws it."""

    name: str
    engine: str  # the fixture that builds the engine
    job: Callable[[int], JobParams]  # seed → the job's parameters
    inputs: Callable[[], tuple[Image.Image, ...]]
    seeded: bool = True  # whether the seed changes the picture (pix2pix draws without noise)

    @property
    def total(self) -> int:
        return self.job(1).effective_steps


CASES = [
    Case("txt2img", "diffusion", lambda seed: params(seed=seed, steps=3), lambda: ()),
    Case("img2img", "diffusion", lambda seed: params(seed=seed, steps=4, strength=0.75), lambda: (photo(),)),
    Case("sketch-scribble", "diffusion", sketch, lambda: (scribble(),)),
    Case("sketch-pix2pix", "diffusion", lambda seed: sketch(seed, mode="pix2pix"), lambda: (edges(),), seeded=False),
    Case("face", "faces", lambda seed: FaceParams(seed=seed, count=3), lambda: ()),
    Case("txt2img-hires", "diffusion", lambda seed: params(seed=seed, steps=4, hires=1.5), lambda: ()),
    Case("upscale", "diffusion", lambda seed: action(UpscaleParams, seed, scale=1.5, width=96, height=96),
         lambda: (scribble(),), seeded=False),
    Case("upscale-denoise", "diffusion", lambda seed: action(UpscaleParams, seed, scale=1.5, denoise=0.5, width=96,
                                                              height=96), lambda: (scribble(),)),
    Case("vary", "diffusion", lambda seed: action(VaryParams, seed, strength=0.75), lambda: (scribble(),)),
    Case("zoom", "diffusion", lambda seed: action(ZoomParams, seed, factor=2.0), lambda: (scribble(),)),
    Case("pan", "diffusion", lambda seed: action(PanParams, seed, direction="left", width=96), lambda: (scribble(),)),
]
STEPPED = [case for case in CASES if case.total > 1]  # those with a step after the first, for a cancel to stop
assert {case.name for case in CASES} - {case.name for case in STEPPED} == {"sketch-pix2pix", "upscale"}


@pytest.fixture(scope="module")
def diffusion(tiny_model: Path, tiny_controlnet: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    """One engine for every diffusion kind, as the app builds it: the kinds share its weights."""
    torch.manual_seed(0)
    pix2pix = tmp_path_factory.mktemp("pix2pix") / "latest_net_G.pth"
    torch.save(UnetGenerator(ngf=4).state_dict(), pix2pix)
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                           SketchConfig(controlnet=str(tiny_controlnet), pix2pix=str(pix2pix)))


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> FaceEngine:
    return FaceEngine(FacesConfig(checkpoint=str(write_tiny_faces(tmp_path_factory.mktemp("faces") / "tiny.pkl"))))


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def engine(case: Case, request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(case.engine)


@pytest.fixture(scope="module")
def references() -> dict[str, list[np.ndarray]]:
    return {}  # case name → the pixels of its seed-5 job drawn undisturbed, drawn once per module


def draw(engine: Engine, case: Case, progress: Recorder, seed: int = 5) -> EngineResult:
    return engine.run(case.job(seed), case.inputs(), progress)


def drawn(result: EngineResult) -> list[np.ndarray]:
    return [pixels(image) for image in result.images]


def reference(engine: Engine, case: Case, references: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    if case.name not in references:
        references[case.name] = drawn(draw(engine, case, Recorder()))
    return references[case.name]


def same(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


# ---- progress -------------------------------------------------------------------------------

def test_progress_counts_up_to_the_total_once_per_step(engine: Engine, case: Case) -> None:
    progress = Recorder()
    result = draw(engine, case, progress)
    done = [step[0] for step in progress.steps]
    assert {step[1] for step in progress.steps} == {case.total}, progress.steps  # one total, the job's own
    assert done == sorted(set(done)) and done[-1] == case.total, progress.steps  # rising, ending at the total
    assert len(progress.steps) == case.total  # no step reported twice, none skipped
    assert len(result.images) == len(result.seeds) >= 1 and result.run is not None


# ---- seeds ----------------------------------------------------------------------------------

def test_the_same_seed_draws_the_same_pixels(engine: Engine, case: Case, references) -> None:
    first = reference(engine, case, references)
    assert same(drawn(draw(engine, case, Recorder())), first)
    if case.seeded:  # guards the check above: the seed reaches the picture
        assert not same(drawn(draw(engine, case, Recorder(), seed=6)), first)


# ---- cancel ---------------------------------------------------------------------------------

def test_a_job_cancelled_before_it_starts_draws_nothing(engine: Engine, case: Case) -> None:
    progress = Recorder(cancel_after=0)
    with pytest.raises(JobCancelled):
        draw(engine, case, progress)
    assert progress.steps == []


@pytest.mark.parametrize("case", STEPPED, ids=lambda case: case.name, indirect=True)
def test_a_cancel_takes_effect_at_the_next_step(engine: Engine, case: Case) -> None:
    progress = Recorder(cancel_after=1)  # cancelled as the first step is reported
    with pytest.raises(JobCancelled):
        draw(engine, case, progress)
    assert progress.steps == [(1, case.total)]  # not one step more


def test_a_cancel_with_the_last_step_done_keeps_the_work(engine: Engine, case: Case, references) -> None:
    first = reference(engine, case, references)
    progress = Recorder(cancel_after=case.total)
    assert same(drawn(draw(engine, case, progress)), first)
    assert progress.steps[-1] == (case.total, case.total)


# ---- refusals -------------------------------------------------------------------------------

def test_the_wrong_number_of_input_images_is_refused_before_any_work(engine: Engine, case: Case) -> None:
    job, inputs = case.job(5), case.inputs()
    for wrong in (inputs + (photo(),), inputs[1:]):
        if len(wrong) == len(inputs):
            continue
        progress = Recorder()
        with pytest.raises(ValueError, match=f"{job.kind} job with {len(wrong)} input images instead of {len(inputs)}"):
            engine.run(job, wrong, progress)
        assert progress.steps == []


@pytest.mark.parametrize(("name", "foreign"), [("diffusion", FaceParams(seed=1)), ("faces", params())])
def test_a_job_of_a_kind_the_engine_does_not_draw_is_refused(name: str, foreign: JobParams, request) -> None:
    progress = Recorder()
    with pytest.raises(ValueError, match=f"a {foreign.kind} job was sent to an engine for "):
        request.getfixturevalue(name).run(foreign, (), progress)
    assert progress.steps == []


# ---- after trouble --------------------------------------------------------------------------

def test_after_a_cancelled_or_failed_job_the_next_one_draws_normally(engine: Engine, case: Case, references) -> None:
    first = reference(engine, case, references)
    with pytest.raises(JobCancelled):
        draw(engine, case, Recorder(cancel_after=1 if case.total > 1 else 0))
    with pytest.raises(RuntimeError, match="the frontend went away"):  # a Progress that breaks mid-run
        draw(engine, case, Recorder(fail=RuntimeError("the frontend went away")))
    with pytest.raises(ValueError):
        engine.run(case.job(5), case.inputs() + (photo(),), Recorder())
    progress = Recorder()
    assert same(drawn(draw(engine, case, progress)), first)  # nothing left interrupted, no state carried over
    assert [step[0] for step in progress.steps] == list(range(1, case.total + 1))
