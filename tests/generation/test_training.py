"""Training pix2pix in slices: the PatchGAN, the loss going down, exact resume, atomic checkpoints, the written model."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.pix2pix import UnetGenerator, draw_pix2pix, load_pix2pix
from generation.training.pairs import PairSet, TrainingInputError, build_pairs
from generation.training.patchgan import PatchDiscriminator
from generation.training.trainer import (
    CHECKPOINT,
    PLOT_SIZE,
    SHEET_HEADER,
    Progress,
    Trainer,
    TrainOptions,
)
from tests.generation.test_training_pairs import write_photos

SIZE = 256
TINY = dict(ngf=8, ndf=8, checkpoint_seconds=1e9)


def colour_pair(path: Path, shape: str, paper: tuple[int, int, int], ink: tuple[int, int, int]) -> Path:
    """An aligned pair: a shape's outline on the left, the shape filled in on a saturated ground on the right."""
    image = Image.new("RGB", (2 * SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    box = (70, 70, 186, 186)
    getattr(draw, shape)(box, outline="black", width=2)
    draw.rectangle((SIZE, 0, 2 * SIZE - 1, SIZE - 1), fill=paper)
    getattr(draw, shape)((box[0] + SIZE, box[1], box[2] + SIZE, box[3]), fill=ink)
    image.save(path)
    return path


@pytest.fixture
def pairs(tmp_path: Path) -> PairSet:
    """Two training pairs and one held out. Saturated colours, far from the untrained generator's grey, make
    the first thing it learns (the colours) a large, steady drop of the L1 loss."""
    root = tmp_path / "pairs"
    root.mkdir()
    return PairSet(
        root=root,
        train=(
            colour_pair(root / "a.png", "ellipse", (230, 40, 40), (40, 40, 230)),
            colour_pair(root / "b.png", "rectangle", (40, 40, 230), (240, 220, 40)),
        ),
        held_out=(colour_pair(root / "c.png", "ellipse", (230, 40, 40), (40, 200, 40)),),
        skipped=(), size=SIZE, method="canny", fingerprint="colour-pairs",
    )


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"G.{k}": v for k, v in trainer.generator.state_dict().items()}
    return state | {f"D.{k}": v for k, v in trainer.discriminator.state_dict().items()}


def test_the_patchgan_has_the_reference_keys_and_a_70_pixel_receptive_field() -> None:
    d = PatchDiscriminator(ndf=8)
    convs = ["model.0.weight", "model.0.bias", "model.2.weight", "model.5.weight", "model.8.weight",
             "model.11.weight", "model.11.bias"]
    norms = [f"model.{i}.{name}" for i in (3, 6, 9)
             for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert sorted(d.state_dict()) == sorted(convs + norms)
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items() if k.endswith("weight") and "model.3" not in k}
    assert shapes["model.0.weight"] == (8, 6, 4, 4) and shapes["model.8.weight"] == (64, 32, 4, 4)
    assert shapes["model.11.weight"] == (1, 64, 4, 4)
    assert sorted(PatchDiscriminator().state_dict()) == sorted(d.state_dict())
    x = torch.randn(1, 6, SIZE, SIZE, requires_grad=True)
    out = d.eval()(x)
    assert out.shape == (1, 1, 30, 30)
    out[0, 0, 15, 15].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (70, 70)


def test_options_are_checked_and_the_learning_rate_follows_the_reference_schedule() -> None:
    options = TrainOptions()
    assert options.total_iterations(10) == 2000
    assert TrainOptions(iterations=60).total_iterations(10) == 60
    assert TrainOptions(iterations=5000).total_iterations(10) == 2000
    assert options.lr_at(0) == options.lr_at(99) == 2e-4
    assert options.lr_at(100) == pytest.approx(2e-4 * (1 - 1 / 101))
    assert options.lr_at(199) == pytest.approx(2e-4 / 101)
    for bad, text in (
        (dict(size=128), "size must be 256 (the unet_256 generator), got 128"),
        (dict(epochs=0), "epochs must be at least 1, got 0"),
        (dict(iterations=0), "iterations must be at least 1, got 0"),
        (dict(lr=0.0), "lr must be in (0, 1], got 0.0"),
    ):
        with pytest.raises(TrainingInputError) as caught:
            TrainOptions(**bad)  # type: ignore[arg-type]
        assert str(caught.value) == text


def test_a_few_iterations_bring_the_l1_loss_down(tmp_path: Path, pairs: PairSet) -> None:
    trainer = Trainer.open(tmp_path / "run", pairs, TrainOptions(lr=1e-3, iterations=30, sample_every=100, **TINY))
    seen: list[Progress] = []
    report = trainer.train(on_iteration=seen.append)
    assert (report.iterations, report.iteration, report.done) == (30, 30, True)
    l1 = np.array([p.g_l1 for p in seen])
    assert np.array_equal(l1, np.array(trainer.losses)[:, 1])
    # Seeds 0–5 measured 0.75–0.82 of the start; the untrained generator's grey is far from these colours.
    assert l1[-5:].mean() < 0.9 * l1[:5].mean()
    assert trainer.held_out_l1() < trainer.untrained_l1 - 0.05
    last = seen[-1]
    assert (last.epoch, last.epochs, last.iteration, last.iterations, last.eta_seconds) == (15, 15, 30, 30, 0.0)
    assert seen[0].epoch == 1 and seen[2].epoch == 2 and seen[0].eta_seconds > 0
    assert all(np.isfinite([p.g_gan, p.d, p.seconds_per_iteration]).all() for p in seen)


def test_resuming_from_a_checkpoint_gives_exactly_the_weights_of_a_straight_run(tmp_path: Path, pairs: PairSet) -> None:
    options = TrainOptions(iterations=6, sample_every=1, **TINY)  # sample sheets drawn in between, too
    straight = Trainer.open(tmp_path / "straight", pairs, options)
    straight.train()

    first = Trainer.open(tmp_path / "sliced", pairs, options)
    first.train(max_iterations=3)  # stops mid-epoch: the epoch's shuffled order must survive
    del first
    torch.rand(1000), np.random.rand(1000)  # other jobs in the process use the global random streams
    resumed = Trainer.open(tmp_path / "sliced", pairs, options)
    assert resumed.iteration == 3
    report = resumed.train()
    assert (report.iterations, report.iteration, report.done) == (3, 6, True)

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert straight.losses == resumed.losses
    assert straight.optimizer_g.state_dict()["state"][0]["exp_avg"].equal(
        resumed.optimizer_g.state_dict()["state"][0]["exp_avg"])
    assert sorted(p.name for p in (tmp_path / "sliced" / "samples").iterdir()) == [
        "epoch-001.png", "epoch-002.png", "epoch-003.png"]


def test_a_killed_run_continues_from_its_last_checkpoint_not_from_zero(tmp_path: Path, pairs: PairSet) -> None:
    options = TrainOptions(iterations=8, sample_every=100, ngf=8, ndf=8, checkpoint_seconds=0.0)

    class Killed(BaseException):
        """Stands in for SIGKILL: nothing after it runs, not even the end-of-slice checkpoint."""

    def kill_at_5(progress: Progress) -> None:
        if progress.iteration == 5:
            raise Killed

    trainer = Trainer.open(tmp_path / "run", pairs, options)
    with pytest.raises(Killed):
        trainer.train(on_iteration=kill_at_5)
    again = Trainer.open(tmp_path / "run", pairs, options)
    assert again.iteration == 5 and len(again.losses) == 5
    assert again.losses == trainer.losses[:5]
    assert again.untrained_l1 == trainer.untrained_l1
    assert again.train().iteration == 8


def test_checkpoints_are_replaced_atomically(tmp_path: Path, pairs: PairSet, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "run"
    trainer = Trainer.open(work, pairs, TrainOptions(iterations=6, sample_every=1, ngf=8, ndf=8, checkpoint_seconds=0))
    trainer.train(max_iterations=2)
    assert sorted(p.name for p in work.iterdir()) == [CHECKPOINT, "samples"]  # no temporary file left behind
    before = (work / CHECKPOINT).read_bytes()
    real_save = torch.save

    def dies_half_way(obj: object, file: object) -> None:
        real_save(obj, file)
        file.seek(len(before) // 3)  # type: ignore[attr-defined]
        file.truncate()  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        trainer.train(max_iterations=1)
    monkeypatch.undo()
    assert (work / CHECKPOINT).read_bytes() == before
    assert not [p for p in work.iterdir() if p.suffix == ".tmp"]
    assert Trainer.open(work, pairs, trainer.options).iteration == 2
    checkpoint = torch.load(work / CHECKPOINT, weights_only=True)  # plain containers, numbers and tensors only
    assert checkpoint["rng"]["numpy"]["bit_generator"] == "PCG64"
    assert checkpoint["losses"].shape == (2, 3)


def test_a_slice_ends_on_its_limits_or_when_asked(tmp_path: Path, pairs: PairSet) -> None:
    trainer = Trainer.open(tmp_path / "run", pairs, TrainOptions(iterations=6, sample_every=100, **TINY))
    assert trainer.train(max_seconds=0).iterations == 0
    asked = iter([False, False, True])
    report = trainer.train(should_stop=lambda: next(asked))
    assert (report.iterations, report.iteration, report.done, report.samples) == (2, 2, False, ())
    report = trainer.train(max_iterations=10)
    assert (report.iterations, report.iteration, report.done) == (4, 6, True)
    assert [p.name for p in report.samples] == ["epoch-003.png"]  # at the end of the run, whatever sample_every
    assert trainer.train().iterations == 0
    assert Trainer.open(tmp_path / "run", pairs, trainer.options).iteration == 6
    # The epoch's learning rate: with 1 constant and 1 decaying epoch, the second runs at half the rate.
    half = Trainer.open(tmp_path / "decay", pairs, TrainOptions(epochs=1, decay_epochs=1, **TINY))
    half.train(max_iterations=3)
    assert half.optimizer_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert half.train().iteration == 4


def test_a_checkpoint_from_other_options_or_pairs_is_refused(tmp_path: Path, pairs: PairSet) -> None:
    options = TrainOptions(iterations=4, **TINY)
    Trainer.open(tmp_path / "run", pairs, options).train(max_iterations=1)
    with pytest.raises(TrainingInputError) as caught:
        Trainer.open(tmp_path / "run", pairs, dataclasses.replace(options, ngf=16, lr=1e-3))
    assert str(caught.value) == (
        f"the run in {tmp_path / 'run'} was started with other options (lr=0.0002 there, 0.001 now; ngf=8 there, "
        "16 now); resume it with the same options or use another work folder"
    )
    other = dataclasses.replace(pairs, train=pairs.train[:1], fingerprint="other")
    with pytest.raises(TrainingInputError, match="was started on another pair set"):
        Trainer.open(tmp_path / "run", other, options)
    # When to stop, save and draw samples may change between slices.
    longer = dataclasses.replace(options, iterations=None, sample_every=2, checkpoint_seconds=5.0)
    assert Trainer.open(tmp_path / "run", pairs, longer).iteration == 1
    (tmp_path / "run" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingInputError, match=r"checkpoint .* cannot be read .*; delete it to start the run afresh"):
        Trainer.open(tmp_path / "run", pairs, options)


def test_built_pairs_train_into_a_generator_that_sketch_mode_pix2pix_loads(tmp_path: Path) -> None:
    pairs = build_pairs(write_photos(tmp_path / "photos", 8, junk=False), tmp_path / "pairs")
    trainer = Trainer.open(tmp_path / "run", pairs, TrainOptions(iterations=4, sample_every=1, **TINY))
    trainer.train()
    result = trainer.finish(tmp_path / "models" / "mine.pth")
    assert (result.model_path, result.iterations) == (tmp_path / "models" / "mine.pth", 4)
    assert result.seconds > 0 and np.isfinite(result.held_out_l1) and np.isfinite(result.untrained_l1)
    assert result.samples == tmp_path / "run" / "samples" / "epoch-001.png"  # 6 training pairs: 4 iterations
    model = load_pix2pix(result.model_path)
    assert (model.ngf, model.norm) == (8, "batch")
    assert sorted(torch.load(result.model_path, weights_only=True)) == sorted(UnetGenerator(ngf=8).state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, trainer.generator.state_dict()[key])
    with Image.open(pairs.held_out[0]) as pair:
        edges = pair.crop((0, 0, SIZE, SIZE))
    drawn = draw_pix2pix(model, edges)
    assert (drawn.mode, drawn.size) == ("RGB", (SIZE, SIZE))
    with Image.open(result.losses_plot) as plot:
        assert (plot.format, plot.size) == ("PNG", PLOT_SIZE)
    with Image.open(result.samples) as sheet:
        assert (sheet.format, sheet.size) == ("PNG", (3 * SIZE, SHEET_HEADER + len(pairs.held_out) * SIZE))
        # The middle column is what /sketch --mode pix2pix draws from the held-out edges.
        assert np.array_equal(np.asarray(sheet)[SHEET_HEADER:SHEET_HEADER + SIZE, SIZE:2 * SIZE], np.asarray(drawn))
    assert not [p for p in (tmp_path / "models").iterdir() if p.name != "mine.pth"]
    assert re.fullmatch(r"epoch-\d{3}\.png", result.samples.name)
