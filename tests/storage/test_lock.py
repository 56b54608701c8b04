"""One easel per data folder, held by an OS lock on the folder itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.errors import EaselError
from storage.lock import DataDirInUse, DataDirLock

TRY_LOCK = "import sys; from storage.lock import DataDirLock; DataDirLock(sys.argv[1]).acquire(); print('got it')"


def other_process_tries(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(folder)], capture_output=True, text=True, timeout=60)


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(tmp_path).acquire()
        other = other_process_tries(tmp_path)
    assert f"pid {os.getpid()}" in str(refused.value) and str(tmp_path) in str(refused.value)
    assert isinstance(refused.value, EaselError)
    assert other.returncode != 0 and f"another easel (pid {os.getpid()}) is already running" in other.stderr


def test_nothing_in_the_folder_can_be_deleted_to_get_past_the_lock(tmp_path: Path) -> None:
    (tmp_path / "easel.lock").write_text("4242")  # what an older easel left behind
    with DataDirLock(tmp_path):
        assert list(tmp_path.iterdir()) == []  # no lock file to delete, the stale one is gone
        assert other_process_tries(tmp_path).returncode != 0
    assert list(tmp_path.iterdir()) == []  # and nothing stale after a clean exit


def test_the_lock_is_free_again_after_release_and_after_the_holder_dies(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        pass
    assert other_process_tries(tmp_path).stdout == "got it\n"  # it exited holding it: the OS let go
    with DataDirLock(tmp_path):
        pass


def test_separate_data_folders_do_not_block_each_other(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "a"), DataDirLock(tmp_path / "b"):
        assert other_process_tries(tmp_path / "c").stdout == "got it\n"
