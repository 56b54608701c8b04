"""One easel per data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.errors import EaselError
from storage.lock import DataDirInUse, DataDirLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(tmp_path).acquire()
    assert f"pid {os.getpid()}" in str(refused.value) and str(tmp_path) in str(refused.value)
    assert isinstance(refused.value, EaselError)


def test_the_lock_is_free_again_after_release(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        pass
    with DataDirLock(tmp_path) as lock:
        assert lock.path.read_text() == str(os.getpid())


def test_separate_data_folders_do_not_block_each_other(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "a"), DataDirLock(tmp_path / "b"):
        assert (tmp_path / "a" / "easel.lock").exists() and (tmp_path / "b" / "easel.lock").exists()
