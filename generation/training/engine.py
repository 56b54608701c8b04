"""The engine of training jobs: one pix2pix run trained a slice a turn, so other people's jobs get the GPU between.

A turn trains for [training] slice_seconds, then hands the GPU back (EngineResult.more); the run stays in
memory for its next turn and is written to disk every checkpoint_minutes and when it is stopped, so a
restart, a crash or Ctrl-C resumes it from its checkpoint. Its last turn writes the generator where
`/sketch --mode pix2pix --pix2pix NAME` finds it, and returns the last sample sheet and the loss plot.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from generation.config import TrainingConfig, pix2pix_model_file, training_dir
from generation.device import pick_device
from generation.engine import EngineResult, JobCancelled, Progress, check_job
from generation.training.pairs import MANIFEST, PairSet, build_pairs, open_pairs
from generation.training.trainer import Progress as Iteration
from generation.training.trainer import Trainer, TrainingResult, TrainOptions
from storage.params import TrainParams
from storage.records import RunInfo

log = logging.getLogger(__name__)

KINDS = ("train",)


def options_for(params: TrainParams, config: TrainingConfig) -> TrainOptions:
    return TrainOptions(epochs=params.epochs, decay_epochs=params.decay_epochs, iterations=params.iterations or None,
                        ngf=params.ngf, ndf=params.ngf, seed=params.seed,
                        checkpoint_seconds=config.checkpoint_minutes * 60)


def pairs_for(params: TrainParams, folder: Path) -> PairSet:
    """The run's pair set: the one built for it before (a resumed run trains on what it started with), else
    built now from the photos."""
    pairs = folder / "pairs"
    if (pairs / MANIFEST).exists():
        return open_pairs(pairs)
    return build_pairs(Path(params.photos), pairs, size=params.size, method=params.method, ngf=params.ngf,
                       ndf=params.ngf)


def duration(seconds: float) -> str:
    """3 s, 4 min, 2 h 05 min."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(p: Iteration) -> str:
    """Where a run is, as people read it: `epoch 3/200 · G GAN 0.71 · G L1 0.231 · D 0.65 · 1.4 s/it · 2 h 05 min left`."""
    return (f"epoch {p.epoch}/{p.epochs} · G GAN {p.g_gan:.3f} · G L1 {p.g_l1:.3f} · D {p.d:.3f} · "
            f"{p.seconds_per_iteration:.2f} s/it · {duration(p.eta_seconds)} left")


def result_text(result: TrainingResult) -> str:
    """How well the finished generator does on photos it never saw, against where it started."""
    better = "better than" if result.held_out_l1 < result.untrained_l1 else "NOT better than"
    return (f"held-out L1 {result.held_out_l1:.4f} ({better} the untrained generator's {result.untrained_l1:.4f}) "
            f"after {result.iterations} iterations")


def titled(image: Image.Image, text: str) -> Image.Image:
    """The picture with a line of text above it (the loss plot with the held-out result)."""
    strip = 24
    out = Image.new("RGB", (image.width, image.height + strip), "white")
    out.paste(image.convert("RGB"), (0, strip))
    ImageDraw.Draw(out).text((8, 6), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return out


@dataclass
class _Run:
    key: tuple
    trainer: Trainer
    folder: Path


class TrainingEngine:
    """Trains pix2pix models on the queue's GPU thread, one slice per call of run()."""

    def __init__(self, config: TrainingConfig, models_dir: Path, device: str = "auto") -> None:
        self.config, self.models_dir, self.device_name = config, Path(models_dir), device
        self._device: torch.device | None = None
        self._run: _Run | None = None
        self.last: Iteration | None = None  # the latest iteration's losses and pace
        self.finished: TrainingResult | None = None  # the last run this engine finished

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = pick_device(self.device_name)
        return self._device

    def unavailable(self) -> str | None:
        return None

    def run_info(self) -> RunInfo | None:
        import diffusers

        device = self.device
        return RunInfo(model="pix2pix", model_hash=None, memory_profile="-", attention="-",
                       dtype="float16 autocast" if device.type == "cuda" else "float32", device=str(device),
                       diffusers_version=diffusers.__version__, torch_version=torch.__version__)

    def run(self, params: TrainParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """One slice of the run: more=True while it has more to train; its last turn writes the model."""
        check_job(params, inputs, KINDS)
        run = self.open(params)
        trainer = run.trainer

        def each(iteration: Iteration) -> None:
            self.last = iteration
            progress.step(iteration.iteration, iteration.iterations, None, progress_text(iteration))

        report = trainer.train(max_seconds=self.config.slice_seconds, should_stop=lambda: progress.cancelled,
                               on_iteration=each)
        if progress.cancelled:  # stopped after its iteration: checkpointed, so the next start resumes it there
            trainer.checkpoint()
            self._run = None
            raise JobCancelled(f"training stopped at iteration {trainer.iteration} of {trainer.total}; "
                               f"its checkpoint is kept in {run.folder}")
        info = self.run_info()
        if not report.done:
            if report.samples:  # a new sample sheet: shown where previews are
                with Image.open(report.samples[-1]) as sheet:
                    progress.step(trainer.iteration, trainer.total, sheet.convert("RGB"), "new samples")
            return EngineResult(images=(), seeds=(), run=info, more=True)
        result = self.finished = trainer.finish(pix2pix_model_file(self.models_dir, params.name))
        self._run = None
        log.info("pix2pix model %s written to %s: %s", params.name, result.model_path, result_text(result))
        with Image.open(result.samples) as sheet, Image.open(result.losses_plot) as plot:
            images = (sheet.convert("RGB"), titled(plot, result_text(result)))
        return EngineResult(images=images, seeds=(params.seed,) * len(images), run=info)

    def close(self) -> None:
        """Checkpoint the run kept between its turns (the queue is stopping): the next start resumes it there."""
        if self._run is not None:
            self._run.trainer.checkpoint()
            self._run = None

    def open(self, params: TrainParams) -> _Run:
        """The run these params ask for: the one in memory, else resumed from its checkpoint or started."""
        key = (params.name, params.photos, params.seed, params.epochs, params.decay_epochs, params.iterations,
               params.method, params.ngf)
        if self._run is not None and self._run.key == key:
            return self._run
        if self._run is not None:  # another run between this one's turns: the old one waits on disk
            self._run.trainer.checkpoint()
            self._run = None
        folder = training_dir(self.models_dir, params.name)
        began = time.monotonic()
        pairs = pairs_for(params, folder)
        trainer = Trainer.open(folder, pairs, options_for(params, self.config), self.device)
        log.info("pix2pix training %s: %d pairs to learn from, %d held out; at iteration %d of %d (%.1f s to open)",
                 params.name, len(pairs.train), len(pairs.held_out), trainer.iteration, trainer.total,
                 time.monotonic() - began)
        self._run = _Run(key, trainer, folder)
        return self._run
