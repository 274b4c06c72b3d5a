"""One run at a time per work key and per output dir.

The lock is an exclusive `flock` on a file that also records its holder (host, pid, work key,
start time) for the message the next run shows. The kernel drops the lock when the holder's
process ends, however it ends (SIGKILL included), so a lock is never left stale.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class LockHeld(RuntimeError):
    """Another run holds the lock; the message says who and what to do."""


class RunLock:
    def __init__(self, path: Path, what: str, key: str):
        """what: the thing locked, as the message names it (e.g. "output dir /data/out")."""
        self.path, self.what, self.key = Path(path), what, key
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')} (work key {holder.get('key')}, "
                   f"since {holder.get('started')})") if holder else "another process"
            raise LockHeld(f"{self.what} is in use by {who}; wait for that run to "
                           "finish or stop it, or use another work_dir / output dir") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "key": self.key,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
