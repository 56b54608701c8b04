"""One easel per data folder: a second one would run the same recovered jobs twice."""

from __future__ import annotations

import os
from pathlib import Path

from storage.errors import EaselError


class DataDirInUse(EaselError):
    """Another easel process holds this data folder."""


if os.name == "nt":
    import msvcrt

    def _open_and_lock(folder: Path) -> int | None:
        # Windows cannot delete a file another process has open, so a lock file there cannot be
        # removed from under its holder.
        fd = os.open(folder / "easel.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _holder(folder: Path) -> int | None:
        return None
else:
    import fcntl

    def _open_and_lock(folder: Path) -> int | None:
        # The lock is on the folder itself, not on a file in it: there is nothing to delete that
        # would let a second easel in, and nothing is left behind after an exit.
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _holder(folder: Path) -> int | None:
        """The pid holding a flock on the folder, where the system says (Linux's /proc/locks)."""
        try:
            info = os.stat(folder)
            locks = Path("/proc/locks").read_text()
        except OSError:
            return None
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": pid, then device (hex major:minor) and inode.
        where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        for line in locks.splitlines():
            fields = line.split()
            if "FLOCK" not in fields or "->" in fields:  # "->" marks a process waiting, not holding
                continue
            at = fields.index("FLOCK")
            if len(fields) > at + 4 and fields[at + 4] == where and fields[at + 3].isdigit():
                return int(fields[at + 3])
        return None


class DataDirLock:
    """An OS lock on the data folder, held for the process's life and dropped by the OS however it ends."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = _open_and_lock(self.folder)
        if fd is None:
            holder = _holder(self.folder)
            who = f"another easel (pid {holder})" if holder else "another easel"
            raise DataDirInUse(
                f"{who} is already running on {self.folder}; "
                "stop it first, or give this one its own [storage] data_dir"
            )
        self._fd = fd
        stale = self.folder / "easel.lock"  # what easel before this version left behind; nothing holds it now
        if os.name != "nt" and stale.is_file():
            stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
