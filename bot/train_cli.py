"""`easel train-pix2pix PHOTOS --name NAME`: train a pix2pix drawing→photo model in this terminal.

The same engine as a /train job, turn after turn with nobody to wait for: pairs built (a contact sheet to
look at), losses printed as they fall, a checkpoint every [training] checkpoint_minutes (at most a tenth
of the run apart) and on Ctrl-C; the same command again resumes from the last one.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from bot.commands.train import checked_folder, refusal_to_overwrite
from bot.config import Config
from bot.limits import CommandError
from storage.params.train import DECAY_EPOCHS, EPOCHS, ITERATIONS, NAME, NAME_RULE, NGF, TrainParams

PRINT_EVERY = 5.0  # seconds between two progress lines


def params_from(args: argparse.Namespace) -> TrainParams:
    """The run the arguments ask for, checked as /train checks its options."""
    if not NAME.fullmatch(args.name):
        raise CommandError(f"a model name is {NAME_RULE}, got {args.name[:70]!r}")
    for label, value, allowed in (("epochs", args.epochs, EPOCHS), ("decay-epochs", args.decay_epochs, DECAY_EPOCHS),
                                  ("iterations", args.iterations, ITERATIONS), ("ngf", args.ngf, NGF)):
        if not allowed.holds(value):
            raise CommandError(f"--{label} must be {allowed.text()}, got {value}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be at least 1, got {args.epochs}")
    if not 0 <= args.seed <= 2**32 - 1:
        raise CommandError(f"--seed must be 0–{2**32 - 1}, got {args.seed}")
    folder = checked_folder(args.photos)
    return TrainParams(seed=args.seed, name=args.name, photos=str(folder), epochs=args.epochs,
                       decay_epochs=args.decay_epochs, iterations=args.iterations, method=args.edges, ngf=args.ngf)


class _Terminal:
    """The engine's Progress here: a line every few seconds with the mean losses since the last; Ctrl-C stops."""

    wants_preview = False

    def __init__(self, engine) -> None:
        self._engine = engine
        self._stop = threading.Event()
        self._said = 0.0
        self._sums = [0.0, 0.0, 0.0]
        self._count = 0

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def step(self, done: int, total: int, preview=None, detail: str = "") -> None:
        from generation.training.engine import duration

        last = self._engine.last
        if last is None or preview is not None:  # a new sample sheet: its path is printed at the end
            return
        self._sums = [a + b for a, b in zip(self._sums, (last.g_gan, last.g_l1, last.d))]
        self._count += 1
        now = time.monotonic()
        if now - self._said >= PRINT_EVERY or done == total or done == 1:
            gan, l1, d = (value / self._count for value in self._sums)
            print(f"iteration {done}/{total} · epoch {last.epoch}/{last.epochs} · G GAN {gan:.3f} · G L1 {l1:.3f} · "
                  f"D {d:.3f} (means since the last line) · {last.seconds_per_iteration:.2f} s/it · "
                  f"{duration(last.eta_seconds)} left", flush=True)
            self._said, self._sums, self._count = now, [0.0, 0.0, 0.0], 0


def train_pix2pix(config: Config, args: argparse.Namespace) -> int:
    from generation.config import pix2pix_model_file, training_dir
    from generation.engine import JobCancelled
    from generation.training.engine import TrainingEngine, pairs_for, result_text

    params = params_from(args)
    models = config.training.models_dir(config.storage.data_dir)
    refusal = refusal_to_overwrite(config.training, config.storage.data_dir, params.name)
    if refusal:
        raise CommandError(refusal)
    folder = training_dir(models, params.name)
    pairs = pairs_for(params, folder)
    print(f"pairs: {len(pairs.train)} to learn from, {len(pairs.held_out)} held out to check it "
          f"({pairs.method} edges, {pairs.size}×{pairs.size}); look at them first: {pairs.contact_sheet}", flush=True)
    for skipped in pairs.skipped:
        print(f"  skipped {skipped}", flush=True)
    engine = TrainingEngine(config.training, models, config.generation.device)
    terminal = _Terminal(engine)
    previous = {sig: signal.signal(sig, lambda *_: terminal.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run = engine.open(params)
        trainer = run.trainer
        if trainer.iteration:
            print(f"resuming from the checkpoint at iteration {trainer.iteration} of {trainer.total}", flush=True)
        else:
            print(f"training {trainer.total} iterations ({trainer.epochs} epochs of {trainer.n_train}) on "
                  f"{engine.device}; untrained generator's held-out L1 {trainer.untrained_l1:.4f}", flush=True)
        while engine.run(params, (), terminal).more:
            pass
    except JobCancelled as stopped:
        print(f"stopped: {stopped}; the same command resumes it", file=sys.stderr, flush=True)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = engine.finished
    print(f"wrote {pix2pix_model_file(models, params.name)}: {result_text(result)}", flush=True)
    print(f"samples (edges | drawn | photo): {result.samples}", flush=True)
    print(f"losses: {result.losses_plot}", flush=True)
    print(f"use it: /sketch a photo of it --pix2pix {params.name}  (with a drawing attached)", flush=True)
    return 0
