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

from bot.commands.sketch import model_name
from bot.commands.train import checked_folder, refusal_to_overwrite
from bot.config import Config
from bot.limits import CommandError, LimitsConfig, check_params
from storage.params.train import TrainParams

PRINT_EVERY = 5.0  # seconds between two progress lines


def params_from(args: argparse.Namespace, limits: LimitsConfig) -> TrainParams:
    """The run the arguments ask for, checked as /train checks its options."""
    params = TrainParams(seed=args.seed, name=model_name(args.name), photos=str(checked_folder(args.photos)),
                         epochs=args.epochs, decay_epochs=args.decay_epochs, iterations=args.iterations,
                         method=args.edges, ngf=args.ngf)
    check_params(params, limits)
    return params


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
    from generation.config import pix2pix_model_file
    from generation.engine import JobCancelled
    from generation.training.engine import TrainingEngine, result_text

    params = params_from(args, config.limits)
    models = config.training.models_dir(config.storage.data_dir)
    refusal = refusal_to_overwrite(config.training, config.storage.data_dir, params.name)
    if refusal:
        raise CommandError(refusal)
    engine = TrainingEngine(config.training, models, config.generation.device)
    terminal = _Terminal(engine)
    previous = {sig: signal.signal(sig, lambda *_: terminal.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer = engine.open(params).trainer
        pairs = trainer.pairs
        print(f"pairs: {len(pairs.train)} to learn from, {len(pairs.held_out)} held out to check it "
              f"({pairs.method} edges, {pairs.size}×{pairs.size}); look at them first: {pairs.contact_sheet}",
              flush=True)
        for skipped in pairs.skipped:
            print(f"  skipped {skipped}", flush=True)
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
