"""One run per directory: an exclusive lock on a run directory while a run trains in it.

The lock is ``fcntl.flock`` on ``<dir>/run.lock``, which holds one line naming the holder
(pid, host, start time). The kernel drops the lock when the holder exits in any way
(kill -9 included), so a lock file left by a killed process is stale and is simply taken
over; a clean release also deletes the file. Where ``fcntl`` is missing (Windows) the
holder's pid and host decide: a lock file whose process is gone on this host is stale.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Optional, Union

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "run.lock"


class RunDirectoryBusy(ValueError):
    """Another live process holds the run directory's lock."""


def _holder_line() -> str:
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(directory):`` holds the directory's lock; raises :class:`RunDirectoryBusy`
    (naming the directory and the holder) when a live process holds it."""

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: Optional[int] = None

    def _busy(self) -> RunDirectoryBusy:
        try:
            holder = self.path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        except OSError:
            holder = "another process"
        return RunDirectoryBusy(f"out {self.directory} is in use by another run ({holder}); wait for it to finish "
                                f"or stop it (the lock is {self.path})")

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self._acquire_pidfile()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            except BaseException:
                os.close(fd)
                raise
            # the file may have been deleted by a releasing holder between open and flock
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, _holder_line().encode())
        self._fd = fd
        return self

    def _acquire_pidfile(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                words = self.path.read_text(encoding="utf-8", errors="replace").split()
                stale = (len(words) >= 4 and words[0] == "pid" and words[1].isdigit()
                         and words[3] == socket.gethostname() and not pid_alive(int(words[1])))
                if not stale:
                    raise self._busy() from None
                self.path.unlink()
                continue
            os.write(fd, _holder_line().encode())
            self._fd = fd
            return self
        raise self._busy()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still held: a waiting opener sees another inode and retries
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
