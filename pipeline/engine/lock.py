"""One run at a time per work key and per output dir.

The lock is an exclusive `flock` on a file that also records its holder (host, pid, work key,
start time) for the message the next run shows. The kernel drops the lock when the holder's
process ends, however it ends (SIGKILL included), so a lock is never left stale.

An object store has no flock: there the lock is a lease object that its holder renews every
LEASE_S / 4 seconds. A lease not renewed for LEASE_S belongs to a run that died and may be
taken. Two runs that take a free lease at the same moment both read it back after SETTLE_S, and
only the one whose token they find goes on.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from thresher.pipeline.core import storage
from thresher.pipeline.core.errors import ActionableError
from thresher.pipeline.core.files import writing


class LockHeld(ActionableError, RuntimeError):
    """Another run holds the lock; the message says who and what to do."""


LEASE_S = 60.0
SETTLE_S = 1.0


class RunLock:
    def __init__(self, path, what: str, key: str):
        """what: the thing locked, as the message names it (e.g. "output dir /data/out")."""
        self.path = path if isinstance(path, storage.ObjectPath) else Path(path)
        self.what, self.key = what, key
        self._fd: int | None = None
        self._token, self._renewing = None, None

    def _info(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "key": self.key,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _held(self, holder: dict, extra: str = "") -> LockHeld:
        who = (f"pid {holder.get('pid')} on {holder.get('host')} (work key {holder.get('key')}, "
               f"since {holder.get('started')})") if holder else "another process"
        return LockHeld(f"{self.what} is in use by {who}; wait for that run to "
                        f"finish or stop it, or use another work_dir / output dir{extra}")

    def acquire(self) -> "RunLock":
        if isinstance(self.path, storage.ObjectPath):
            return self._acquire_lease()
        with writing(self.path):  # a read-only or missing folder: an error that names it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise self._held(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        self._fd = fd
        return self

    # --- in an object store: a renewed lease ---------------------------------------------
    def _lease(self) -> dict:
        try:
            return json.loads(self.path.read_bytes() or b"{}")
        except (FileNotFoundError, ValueError):
            return {}

    def _write_lease(self) -> None:
        self.path.write_text(json.dumps({**self._holder, "renewed": time.time()}))

    def _acquire_lease(self) -> "RunLock":
        holder = self._lease()
        if holder and time.time() - holder.get("renewed", 0) < LEASE_S:
            raise self._held(holder, f" (a run that died frees it {LEASE_S:.0f} s after its last renewal)")
        self._token = secrets.token_hex(16)
        self._holder = {**self._info(), "token": self._token}  # renewals keep its start time
        self._write_lease()
        time.sleep(SETTLE_S)
        holder = self._lease()
        if holder.get("token") != self._token:
            self._token = None
            raise self._held(holder)
        stop = threading.Event()
        thread = threading.Thread(target=self._renew, args=(stop,), daemon=True, name="thresher-lease")
        thread.start()
        self._renewing = (stop, thread)
        return self

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(LEASE_S / 4):
            try:
                if self._lease().get("token") == self._token:
                    self._write_lease()
            except OSError:
                pass  # the next renewal tries again; the lease lasts LEASE_S

    def release(self) -> None:
        if self._renewing is not None:
            stop, thread = self._renewing
            stop.set()
            thread.join()
            self._renewing = None
            if self._lease().get("token") == self._token:
                self.path.unlink(missing_ok=True)
            self._token = None
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
