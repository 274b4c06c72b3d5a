"""An embedded Ray, as `thresher run` starts it: loopback only, its raylet's store connection
retried every 50 ms, and no process of it left once its driver is killed. One driver process (an
embedded Ray takes seconds to start) answers the three; the last test kills it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

psutil = pytest.importorskip("psutil")

_DRIVER = """
import psutil, ray, time
from thresher.pipeline.engine.executor import RayExecutor
RayExecutor(num_cpus=1, include_dashboard=True).ready()
print("URL", ray._private.worker.global_worker.node.address_info["webui_url"], flush=True)
raylet = next(p for p in psutil.Process().children(recursive=True) if "raylet" in p.name())
env = raylet.environ()
print("RAYLET", env.get("RAY_raylet_client_connect_timeout_milliseconds"),
      env.get("RAY_raylet_client_num_connect_attempts"), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def driver():
    """A driver with an embedded Ray (dashboard on), started with the user's own raylet setting for
    the number of connect attempts; yields (process, {line tag: words})."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_raylet_client_num_connect_attempts="300")
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True, env=env)
    said = {}
    try:
        while len(said) < 2:
            line = proc.stdout.readline()
            assert line, f"the driver ended early (exit code {proc.poll()})"
            tag, *words = line.split()
            said[tag] = words
        yield proc, said
    finally:
        proc.kill()
        proc.wait()


def test_embedded_dashboard_binds_to_loopback(driver):
    _, said = driver
    assert said["URL"][0].startswith("127.0.0.1:")


def test_an_embedded_raylet_retries_its_store_connection_at_50_ms_unless_the_user_set_it(driver):
    """The raylet reads its connect retries from the environment ray.init passes on: ours (50 ms)
    unless the user exported their own (here: 300 attempts)."""
    _, said = driver
    assert said["RAYLET"] == ["50", "300"]


def test_an_embedded_ray_does_not_outlive_a_killed_driver(driver):
    proc, _ = driver
    spawned = psutil.Process(proc.pid).children(recursive=True)
    names = {p.name() for p in spawned}
    assert any("raylet" in n for n in names) and len(spawned) >= 4, names
    proc.kill()  # SIGKILL: no atexit, no ray.shutdown()
    proc.wait()
    gone, alive = psutil.wait_procs(spawned, timeout=30)
    assert not alive, [(p.pid, p.name()) for p in alive]
