"""Training a pix2pix edges→photo model in slices: unet_256 + 70×70 PatchGAN, checkpoints, exact resume.

The recipe is pytorch-CycleGAN-and-pix2pix's `--model pix2pix` defaults: batch 1, Adam(2e-4, 0.5),
vanilla GAN loss + 100·L1, constant learning rate for `epochs` then a linear decay over
`decay_epochs`, random jitter (resize to 286, random 256 crop, random flip). A run is cut into
slices (so chat jobs can use the GPU in between) and checkpointed with every random state, so a run
stopped and resumed any number of times draws the same weights as one run straight through (on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from generation.pix2pix import UnetGenerator, draw_pix2pix, generate, short_reason
from generation.training.pairs import SIZE, PairSet, TrainingInputError, split_pair
from generation.training.patchgan import PatchDiscriminator

CHECKPOINT = "checkpoint.pt"
SAMPLES = "samples"
LOSS_PLOT = "losses.png"
FORMAT = 1
SAMPLE_ROWS = 6  # held-out pairs shown on a sample sheet, at most
SHEET_HEADER = 24  # px of column titles above a sample sheet
# Options that change what is computed; the others (when to stop, save and draw samples) may change on resume.
_MATH_OPTIONS = ("size", "epochs", "decay_epochs", "lr", "beta1", "l1_weight", "ngf", "ndf", "seed")
_SPEED_WINDOW = 20  # iterations in the running average of seconds per iteration


@dataclass(frozen=True)
class TrainOptions:
    """How to train: pix2pix's defaults, plus when to stop early, checkpoint and draw samples."""

    size: int = SIZE
    epochs: int = 100  # at the full learning rate
    decay_epochs: int = 100  # then decaying linearly towards 0
    iterations: int | None = None  # stop after this many iterations in all (short runs); the schedule is unchanged
    lr: float = 2e-4
    beta1: float = 0.5
    l1_weight: float = 100.0
    ngf: int = 64
    ndf: int = 64
    seed: int = 0
    checkpoint_seconds: float = 300.0
    sample_every: int = 5  # epochs

    def __post_init__(self) -> None:
        if self.size != SIZE:
            raise TrainingInputError(f"size must be {SIZE} (the unet_256 generator), got {self.size}")
        for name in ("epochs", "ngf", "ndf", "sample_every"):
            if getattr(self, name) < 1:
                raise TrainingInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decay_epochs < 0:
            raise TrainingInputError(f"decay_epochs must be 0 or more, got {self.decay_epochs}")
        if self.iterations is not None and self.iterations < 1:
            raise TrainingInputError(f"iterations must be at least 1, got {self.iterations}")
        if not (0.0 < self.lr <= 1.0):
            raise TrainingInputError(f"lr must be in (0, 1], got {self.lr}")
        if not (0.0 <= self.beta1 < 1.0):
            raise TrainingInputError(f"beta1 must be in [0, 1), got {self.beta1}")
        if self.l1_weight < 0:
            raise TrainingInputError(f"l1_weight must be 0 or more, got {self.l1_weight}")
        if self.checkpoint_seconds < 0:
            raise TrainingInputError(f"checkpoint_seconds must be 0 or more, got {self.checkpoint_seconds}")

    def total_iterations(self, n_train: int) -> int:
        """Iterations of the whole run over n_train training pairs (batch 1)."""
        full = (self.epochs + self.decay_epochs) * n_train
        return full if self.iterations is None else min(full, self.iterations)

    def lr_at(self, epoch: int) -> float:
        """The learning rate in epoch `epoch` (0-based): the reference's "linear" policy."""
        return self.lr * (1.0 - max(0, epoch + 1 - self.epochs) / (self.decay_epochs + 1))


@dataclass(frozen=True)
class Progress:
    """One finished iteration: where the run is, this iteration's losses, the pace."""

    epoch: int  # 1-based
    epochs: int
    iteration: int  # iterations done, 1-based
    iterations: int
    g_gan: float
    g_l1: float  # mean |G(A) − B| on the [−1, 1] scale, before the l1_weight
    d: float
    seconds_per_iteration: float
    eta_seconds: float


@dataclass(frozen=True)
class SliceReport:
    """What one call of Trainer.train did."""

    iterations: int  # done in this slice
    iteration: int  # reached in all
    done: bool
    samples: tuple[Path, ...]  # sample sheets written in this slice


@dataclass(frozen=True)
class TrainingResult:
    """The finished (or stopped) run: the generator file, its pictures and how well it does on held-out photos."""

    model_path: Path
    losses_plot: Path
    samples: Path  # the last sample sheet
    held_out_l1: float  # mean |G(A) − B| on the held-out pairs, [−1, 1] scale, eval mode
    untrained_l1: float  # the same for the generator before any training
    iterations: int
    seconds: float  # training time over all slices


class Trainer:
    """One pix2pix training run in a work folder; open it, train in slices, finish to write the generator."""

    def __init__(self, work_dir: Path, pairs: PairSet, options: TrainOptions, device: torch.device) -> None:
        """Use Trainer.open; this builds the networks and optimisers with the run's initial weights."""
        if len(pairs.train) < 1 or len(pairs.held_out) < 1:
            raise TrainingInputError("the pair set needs at least one training pair and one held-out pair")
        if pairs.size != options.size:
            raise TrainingInputError(f"the pairs are {pairs.size}×{pairs.size}, the options say size {options.size}")
        self.work_dir, self.pairs, self.options, self.device = work_dir, pairs, options, device
        self.n_train = len(pairs.train)
        self.total = options.total_iterations(self.n_train)
        self.epochs = math.ceil(self.total / self.n_train)
        self.cuda = device.type == "cuda"
        init = torch.Generator().manual_seed(options.seed)
        self.generator = UnetGenerator(ngf=options.ngf, norm="batch", use_dropout=True)
        self.discriminator = PatchDiscriminator(ndf=options.ndf)
        for net in (self.generator, self.discriminator):
            _init_weights(net, init)
            net.to(device).train()
        betas = (options.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=options.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=options.lr, betas=betas)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        # Our own random streams, swapped in around each step, so other work in this process (other
        # jobs between slices) neither disturbs a run nor is disturbed by it.
        self.numpy_rng = np.random.default_rng(options.seed)
        self.torch_state = init.get_state()  # dropout on the CPU continues from the initialisation stream
        self.cuda_state: torch.Tensor | None = None
        if self.cuda:
            with torch.random.fork_rng(devices=[device], device_type="cuda"):
                torch.cuda.manual_seed(options.seed)
                self.cuda_state = torch.cuda.get_rng_state(device)
        self.permutation: list[int] = []
        self.iteration = 0
        self.losses: list[tuple[float, float, float]] = []
        self.untrained_l1 = math.nan
        self.seconds = 0.0
        self.samples: list[str] = []
        self._durations: deque[float] = deque(maxlen=_SPEED_WINDOW)
        self._saved_at = time.monotonic()  # when the checkpoint was last written (or the run opened)
        self._saved_iteration = -1  # the iteration the checkpoint on disk holds (-1: none written by this run)

    # ---- opening and saving -----------------------------------------------------------------------

    @classmethod
    def open(cls, work_dir: Path, pairs: PairSet, options: TrainOptions, device: str | torch.device = "cpu") -> Trainer:
        """The run in work_dir: resumed from its checkpoint, or started afresh (measuring the untrained L1)."""
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        trainer = cls(work_dir, pairs, options, device)
        path = work_dir / CHECKPOINT
        if path.exists():
            trainer._load(path)
            trainer._saved_iteration = trainer.iteration
        else:
            trainer.untrained_l1 = trainer.held_out_l1()
            trainer.save()
        return trainer

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / CHECKPOINT

    @property
    def done(self) -> bool:
        return self.iteration >= self.total

    def checkpoint_every(self) -> float:
        """Seconds between two checkpoints: checkpoint_seconds, or a tenth of the whole run's expected time when
        that is shorter, so a short run is checkpointed about ten times (a kill halfway loses a tenth of it)."""
        if not self._durations:
            return self.options.checkpoint_seconds
        pace = sum(self._durations) / len(self._durations)
        return min(self.options.checkpoint_seconds, self.total * pace / 10)

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.checkpoint_every()

    def checkpoint(self) -> None:
        """Save, unless the checkpoint on disk is of this very iteration."""
        if self._saved_iteration != self.iteration:
            self.save()

    def save(self) -> None:
        """Write the checkpoint: to a temporary file, then renamed over the old one (never half-written)."""
        self._saved_at, self._saved_iteration = time.monotonic(), self.iteration
        state = {
            "format": FORMAT,
            "iteration": self.iteration,
            "options": dataclasses.asdict(self.options),
            "pairs": _pair_identity(self.pairs),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "losses": torch.tensor(self.losses, dtype=torch.float32).reshape(-1, 3),
            "untrained_l1": self.untrained_l1,
            "seconds": self.seconds,
            "samples": list(self.samples),
            "rng": {
                "torch": self.torch_state,
                "cuda": self.cuda_state,
                "numpy": self.numpy_rng.bit_generator.state,
                "permutation": list(self.permutation),
            },
        }
        _atomic_save(state, self.checkpoint_path)

    def _load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # any unreadable file: the text says which and what to do
            raise TrainingInputError(
                f"the training checkpoint {path} cannot be read ({short_reason(exc)}); delete it to start the run afresh"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise TrainingInputError(f"{path} is not a training checkpoint easel wrote; delete it to start afresh")
        saved = state["options"]
        differ = [
            f"{name}={saved.get(name)!r} there, {getattr(self.options, name)!r} now"
            for name in _MATH_OPTIONS if saved.get(name) != getattr(self.options, name)
        ]
        if differ:
            raise TrainingInputError(
                f"the run in {self.work_dir} was started with other options ({'; '.join(differ)}); "
                "resume it with the same options or use another work folder"
            )
        pairs = _pair_identity(self.pairs)
        if state["pairs"] != pairs:
            was = state["pairs"]
            raise TrainingInputError(
                f"the run in {self.work_dir} was started on another pair set ({was['train']} training and "
                f"{was['held_out']} held-out {was['method']} pairs, now {pairs['train']} and {pairs['held_out']} "
                f"{pairs['method']}, or the same counts with other pictures); use that set or another work folder"
            )
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        if state["scaler"]:  # empty from a CPU run (no scaler there); a GPU run then starts a fresh one
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.losses = [tuple(row) for row in state["losses"].tolist()]
        self.untrained_l1 = float(state["untrained_l1"])
        self.seconds = float(state["seconds"])
        self.samples = list(state["samples"])
        rng = state["rng"]
        self.torch_state = rng["torch"].cpu()
        if self.cuda and rng["cuda"] is not None:
            self.cuda_state = rng["cuda"].cpu()
        self.numpy_rng.bit_generator.state = rng["numpy"]
        self.permutation = [int(i) for i in rng["permutation"]]

    # ---- training ---------------------------------------------------------------------------------

    def train(
        self, *, max_iterations: int | None = None, max_seconds: float | None = None,
        should_stop: Callable[[], bool] | None = None, on_iteration: Callable[[Progress], None] | None = None,
    ) -> SliceReport:
        """Train one slice: until the run is done, max_iterations or max_seconds pass, or should_stop() is true."""
        start = time.monotonic()
        done_here = 0
        written: list[Path] = []
        stopped = False
        while not self.done:
            if should_stop is not None and should_stop():
                stopped = True
                break
            if max_iterations is not None and done_here >= max_iterations:
                break
            if max_seconds is not None and time.monotonic() - start >= max_seconds:
                break
            began = time.monotonic()
            losses = self._step()
            took = time.monotonic() - began
            self.seconds += took
            self._durations.append(took)
            self.losses.append(losses)
            self.iteration += 1
            done_here += 1
            if self.iteration % self.n_train == 0 or self.done:
                epoch = math.ceil(self.iteration / self.n_train)
                if epoch % self.options.sample_every == 0 or self.done:
                    written.append(self.sample_sheet())
            if self._checkpoint_due() and not self.done:
                self.save()
            if on_iteration is not None:
                on_iteration(self._progress(losses))
        # A slice that ends as planned keeps its state in memory for the next one; a stop, the end, or a due
        # checkpoint writes it.
        if stopped or self.done or self._checkpoint_due():
            self.save()
        return SliceReport(done_here, self.iteration, self.done, tuple(written))

    def _progress(self, losses: tuple[float, float, float]) -> Progress:
        pace = sum(self._durations) / len(self._durations)
        return Progress(
            epoch=math.ceil(self.iteration / self.n_train), epochs=self.epochs,
            iteration=self.iteration, iterations=self.total,
            g_gan=losses[0], g_l1=losses[1], d=losses[2],
            seconds_per_iteration=pace, eta_seconds=pace * (self.total - self.iteration),
        )

    def _step(self) -> tuple[float, float, float]:
        """One iteration on one jittered pair: D on real and fake, then G on GAN + L1."""
        epoch, position = divmod(self.iteration, self.n_train)
        if position == 0 or len(self.permutation) != self.n_train:
            self.permutation = [int(i) for i in self.numpy_rng.permutation(self.n_train)]
        real_a, real_b = self._jittered(self.pairs.train[self.permutation[position]])
        lr = self.options.lr_at(epoch)
        for optimizer in (self.optimizer_g, self.optimizer_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        with self._own_rng():
            return self._optimize(real_a, real_b)

    def _optimize(self, real_a: torch.Tensor, real_b: torch.Tensor) -> tuple[float, float, float]:
        """pytorch-CycleGAN-and-pix2pix's Pix2PixModel.optimize_parameters, with mixed precision on CUDA."""
        g, d, scaler = self.generator, self.discriminator, self.scaler
        bce = nn.functional.binary_cross_entropy_with_logits
        with self._autocast():
            fake_b = g(real_a)
        # D: real pairs towards 1, generated ones towards 0.
        d.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        with self._autocast():
            pred_fake = d(torch.cat([real_a, fake_b.detach()], 1))
            loss_d_fake = bce(pred_fake, torch.zeros_like(pred_fake))
            pred_real = d(torch.cat([real_a, real_b], 1))
            loss_d_real = bce(pred_real, torch.ones_like(pred_real))
            loss_d = (loss_d_fake + loss_d_real) * 0.5
        scaler.scale(loss_d).backward()
        scaler.step(self.optimizer_d)
        # G: fool D, and stay close to the photo.
        d.requires_grad_(False)
        self.optimizer_g.zero_grad(set_to_none=True)
        with self._autocast():
            pred_fake = d(torch.cat([real_a, fake_b], 1))
            loss_g_gan = bce(pred_fake, torch.ones_like(pred_fake))
            loss_g_l1 = nn.functional.l1_loss(fake_b.float(), real_b)
            loss_g = loss_g_gan + loss_g_l1 * self.options.l1_weight
        scaler.scale(loss_g).backward()
        scaler.step(self.optimizer_g)
        scaler.update()
        d.requires_grad_(True)
        return float(loss_g_gan.detach()), float(loss_g_l1.detach()), float(loss_d.detach())

    def _jittered(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Edges and photo resized to size·286/256, the same random size×size crop of both, maybe both flipped."""
        size = self.options.size
        load = round(size * 286 / 256)
        with Image.open(path) as pair:
            a, b = split_pair(pair)
        a = a.resize((load, load), Image.Resampling.BICUBIC)
        b = b.resize((load, load), Image.Resampling.BICUBIC)
        x, y = (int(v) for v in self.numpy_rng.integers(0, load - size + 1, size=2))
        flip = bool(self.numpy_rng.random() < 0.5)
        tensors = []
        for im in (a, b):
            im = im.crop((x, y, x + size, y + size))
            if flip:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            tensors.append(_tensor(im, self.device))
        return tensors[0], tensors[1]

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """The run's torch random state in place of the process's for the duration, then saved back."""
        devices = [self.device] if self.cuda else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self.torch_state)
            if self.cuda:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            yield
            self.torch_state = torch.get_rng_state()
            if self.cuda:
                self.cuda_state = torch.cuda.get_rng_state(self.device)

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda)

    # ---- checking and finishing -------------------------------------------------------------------

    def held_out_l1(self) -> float:
        """Mean |G(A) − B| over the held-out pairs, unjittered, drawn as /sketch --mode pix2pix draws (per-picture
        batch statistics, no dropout), on the [−1, 1] scale."""
        total = 0.0
        try:
            for path in self.pairs.held_out:
                with Image.open(path) as pair:
                    a, b = split_pair(pair)
                fake = generate(self.generator, _tensor(a, self.device)).float().clamp(-1.0, 1.0)
                with torch.inference_mode():
                    total += float((fake - _tensor(b, self.device)).abs().mean())
        finally:
            self.generator.train()
        return total / len(self.pairs.held_out)

    def sample_sheet(self) -> Path:
        """Rows of edges | drawn | photo for held-out pairs, as /sketch --mode pix2pix draws; samples/epoch-NNN.png."""
        epoch = math.ceil(self.iteration / self.n_train)
        path = self.work_dir / SAMPLES / f"epoch-{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        held = self.pairs.held_out
        rows = [held[i * len(held) // min(SAMPLE_ROWS, len(held))] for i in range(min(SAMPLE_ROWS, len(held)))]
        size = self.options.size
        sheet = Image.new("RGB", (3 * size, SHEET_HEADER + len(rows) * size), "white")
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.load_default()
        for column, title in enumerate(("edges", f"drawn (iteration {self.iteration})", "photo")):
            draw.text((column * size + 6, 6), title, fill=(0, 0, 0), font=font)
        try:
            for row, pair_path in enumerate(rows):
                with Image.open(pair_path) as pair:
                    a, b = split_pair(pair)
                top = SHEET_HEADER + row * size
                sheet.paste(a, (0, top))
                sheet.paste(draw_pix2pix(self.generator, a), (size, top))
                sheet.paste(b, (2 * size, top))
        finally:
            self.generator.train()  # draw_pix2pix leaves it in eval mode
        _atomic_png(sheet, path)
        if path.name not in self.samples:
            self.samples.append(path.name)
        return path

    def loss_plot(self) -> Path:
        """losses.png: G GAN, G L1 and D over the iterations, smoothed, one panel each."""
        path = self.work_dir / LOSS_PLOT
        _atomic_png(plot_losses(self.losses), path)
        return path

    def finish(self, model_path: Path) -> TrainingResult:
        """Write the generator (a reference-layout state dict that load_pix2pix reads), the loss plot, a last sample sheet."""
        model_path = Path(model_path)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        weights = {key: value.detach().cpu() for key, value in self.generator.state_dict().items()}
        _atomic_save(weights, model_path)
        last = self.work_dir / SAMPLES / f"epoch-{math.ceil(self.iteration / self.n_train):03d}.png"
        if not (last.exists() and self.done):
            last = self.sample_sheet()
        plot = self.loss_plot()
        self.save()
        return TrainingResult(
            model_path=model_path, losses_plot=plot, samples=last, held_out_l1=self.held_out_l1(),
            untrained_l1=self.untrained_l1, iterations=self.iteration, seconds=self.seconds,
        )


# ---- the loss plot --------------------------------------------------------------------------------

PLOT_SIZE = (800, 600)
_CURVES = (("G GAN", (200, 60, 40)), ("G L1", (40, 110, 200)), ("D", (60, 150, 60)))


def plot_losses(losses: Sequence[Sequence[float]], size: tuple[int, int] = PLOT_SIZE) -> Image.Image:
    """Three stacked panels (G GAN, G L1, D) of a moving average over the iterations, drawn with Pillow."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    values = np.asarray(losses, dtype=np.float64).reshape(-1, 3)
    n = len(values)
    window = max(1, min(n // 4, max(5, n // 50)))  # batch-1 losses are noisy: always smooth a little
    left, right, top_pad, bottom_pad = 60, 16, 22, 18
    panel = (height - bottom_pad) // 3
    for k, (name, colour) in enumerate(_CURVES):
        top = k * panel + top_pad
        bottom = (k + 1) * panel - 4
        draw.rectangle((left, top, width - right, bottom), outline=(160, 160, 160))
        draw.text((left, top - 16), f"{name} (moving average of {window})", fill=colour, font=font)
        if n == 0:
            draw.text((left + 10, top + 10), "no iterations yet", fill=(0, 0, 0), font=font)
            continue
        series = _moving_average(values[:, k], window)
        low, high = float(series.min()), float(series.max())
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        for value, y in ((high, top), (low, bottom)):
            draw.text((4, y - 6), f"{value:.3g}", fill=(0, 0, 0), font=font)
        xs = left + (np.arange(len(series)) + (window - 1) / 2 + 0.5) / n * (width - right - left)
        ys = bottom - (series - low) / (high - low) * (bottom - top)
        step = max(1, len(series) // (2 * width))  # a long run: a couple of points per pixel column is plenty
        xs, ys = xs[::step], ys[::step]
        points = list(zip(xs.tolist(), ys.tolist()))
        if len(points) == 1:
            draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=colour)
        else:
            draw.line(points, fill=colour, width=2)
    axis_y = height - bottom_pad + 2
    for frac in (0.0, 0.5, 1.0):
        x = left + frac * (width - right - left)
        label = f"{round(frac * n)}" + (" iterations" if frac == 1.0 else "")
        tx = x - (draw.textlength(label, font=font) if frac == 1.0 else 0)
        draw.text((tx, axis_y), label, fill=(0, 0, 0), font=font)
    return image


def _moving_average(series: np.ndarray, window: int) -> np.ndarray:
    """Means of each run of `window` values (len − window + 1 of them), by cumulative sums: O(n) for any window."""
    if window <= 1:
        return series
    sums = np.cumsum(np.concatenate([[0.0], series]))
    return (sums[window:] - sums[:-window]) / window


# ---- helpers --------------------------------------------------------------------------------------


def _init_weights(net: nn.Module, generator: torch.Generator) -> None:
    """The reference's init_weights('normal', 0.02): conv weights N(0, 0.02), batch norm weights N(1, 0.02), biases 0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(module.bias)


def _tensor(image: Image.Image, device: torch.device) -> torch.Tensor:
    """1×3×H×W in [−1, 1], as ToTensor + Normalize((0.5,)·3, (0.5,)·3)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    return (x / 255.0 * 2.0 - 1.0).to(device)


def _pair_identity(pairs: PairSet) -> dict[str, object]:
    return {
        "size": pairs.size, "method": pairs.method, "train": len(pairs.train), "held_out": len(pairs.held_out),
        "fingerprint": pairs.fingerprint,
    }


def _atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file beside path, flushed to disk, then renamed over path."""
    _atomic_write(path, lambda file: torch.save(obj, file), sync=True)


def _atomic_png(image: Image.Image, path: Path) -> None:
    _atomic_write(path, lambda file: image.save(file, format="PNG"))


def _atomic_write(path: Path, write: Callable[[BinaryIO], None], sync: bool = False) -> None:
    """write() into a temporary file beside path (flushed to disk with `sync`), then renamed over path: a kill
    leaves the old file or the new one, never half of one."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
