"""An embedded Ray must not outlive its driver.

`ray.init()` in a driver starts GCS, raylet, dashboard and agent processes. When the driver
exits normally, `ray.shutdown()` stops them; when it is killed (SIGKILL, OOM killer), raylet and
GCS notice and exit, but Ray 2.60's DashboardAgent and RuntimeEnvAgent are re-parented to init
and run on. So the executor that starts an embedded Ray also starts this watcher in a session of
its own: it records the driver's descendants while the driver lives, and once the driver is gone
it stops those that are still running (each checked by its start time, so a reused pid is never
touched).

    python -m thresher.pipeline.engine.ray_reaper DRIVER_PID
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

POLL_S = 0.5


def _descendants(driver: psutil.Process) -> dict[int, float]:
    out = {}
    for p in driver.children(recursive=True):
        if p.pid == os.getpid():  # this watcher
            continue
        try:
            out[p.pid] = p.create_time()
        except psutil.Error:
            continue
    return out


def _stop(known: dict[int, float], grace_s: float = 5.0) -> None:
    procs = []
    for pid, started in known.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == started:
                procs.append(p)
        except psutil.Error:
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def watch(driver_pid: int) -> None:
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return
    known: dict[int, float] = {}
    while True:
        try:
            if not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE:
                break
            known.update(_descendants(driver))
        except psutil.Error:
            break
        time.sleep(POLL_S)
    _stop(known)


def start(driver_pid: int) -> subprocess.Popen:
    """The watcher for `driver_pid`, in a new session, so a signal to the driver's group spares it."""
    return subprocess.Popen([sys.executable, "-m", "thresher.pipeline.engine.ray_reaper", str(driver_pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
