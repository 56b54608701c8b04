"""The face engine on a tiny StyleGAN2 generator written as NVIDIA's persistent pickle: nothing in the file
runs, the loaded tensors are the written ones, and faces follow NVIDIA's seeds, truncation, mixing, edits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generation.config import FacesConfig
from generation.faces.checkpoint import CheckpointError
from generation.faces.engine import FaceEngine
from generation.faces.stylegan2 import Generator, to_uint8, z_for_seed
from storage.params import FaceParams
from tests.generation.nvidia_pickle import TINY, tiny_generator, write_nvidia_pickle
from tests.helpers import Recorder

@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Generator, Path]:
    generator = tiny_generator()
    marker = tmp_path / "MARKER"
    source = f"open({str(marker)!r}, 'w').write('ran')\n"  # NVIDIA's loader would run this; we must not
    return generator, write_nvidia_pickle(tmp_path / "tiny-ffhq.pkl", generator, TINY, source)


def faces(engine: FaceEngine, **changes) -> list[np.ndarray]:
    params = FaceParams(**{"seed": 5, "count": 1, **changes})
    return [np.asarray(image) for image in engine.run(params, (), Recorder()).images]


def direct(generator: Generator, seed: int, psi: float) -> np.ndarray:
    with torch.inference_mode():
        ws = generator.mapping(z_for_seed(seed, generator.z_dim), None, truncation_psi=psi)
        return to_uint8(generator.synthesis(ws, noise_mode="const"))


def test_faces_from_a_persistent_pickle_equal_the_generator_that_wrote_it(checkpoint, tmp_path: Path) -> None:
    generator, path = checkpoint
    engine = FaceEngine(FacesConfig(checkpoint=str(path)))
    for seed, psi in ((5, 0.7), (6, 1.0), (123456, 0.5)):
        assert np.array_equal(faces(engine, seed=seed, psi=psi)[0], direct(generator, seed, psi))
    assert not (tmp_path / "MARKER").exists()  # the embedded source never ran
    loaded = engine._generator.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in generator.state_dict().items())


def test_seeds_truncation_mixing_and_edits(checkpoint) -> None:
    generator, path = checkpoint
    engine = FaceEngine(FacesConfig(checkpoint=str(path)))
    first, second = faces(engine, seed=5, count=2)
    assert np.array_equal(first, faces(engine, seed=5)[0]) and not np.array_equal(first, second)
    average = faces(engine, seed=1, psi=0.0)[0]
    assert all(np.array_equal(average, faces(engine, seed=s, psi=0.0)[0]) for s in (2, 77, 4096))
    every = f"0-{generator.num_ws - 1}"
    assert np.array_equal(faces(engine, seed=5, mix_seed=9, layers=every)[0], faces(engine, seed=9)[0])
    assert not np.array_equal(faces(engine, seed=5, mix_seed=9, layers="coarse")[0], first)
    assert np.array_equal(faces(engine, seed=5, edits=(("dir0", 0.0),))[0], first)
    assert not np.array_equal(faces(engine, seed=5, edits=(("dir0", 3.0),))[0], first)


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path: Path) -> None:
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil()}))
    engine = FaceEngine(FacesConfig(checkpoint=str(path)))
    with pytest.raises(CheckpointError) as refused:
        faces(engine)
    assert "evil.pkl" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "PWNED").exists() and engine._generator is None


def test_no_checkpoint_says_what_to_set() -> None:
    assert "[faces] checkpoint" in FaceEngine(FacesConfig()).unavailable()
