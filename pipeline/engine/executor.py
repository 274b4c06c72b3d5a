"""Executors run a shard task over a list of work items; Ray is one of them, never the logic.

A task is a picklable object with `setup()` (load models once per worker) and
`__call__(item) -> result`. Errors raised inside a task come back as `TaskFailed` with the
task's own message (e.g. an InputError naming the bad file), not a wall of Ray traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
import sys
import threading
import traceback
from typing import Any, Iterator, Protocol

from thresher.pipeline.core.cache import use_numba_cache
from thresher.pipeline.core.errors import ActionableError
from thresher.pipeline.core.stage import Resources
from thresher.pipeline.engine.errors import TaskFailed


class ShardTask(Protocol):
    def setup(self) -> None: ...
    def __call__(self, item: Any) -> Any: ...


def _failure(exc: Exception) -> dict:
    """An error raised in a task, as the driver reports it (TaskFailed), not as a dead worker."""
    return {"ok": False, "kind": type(exc).__name__, "message": str(exc), "detail": traceback.format_exc(),
            "actionable": isinstance(exc, ActionableError)}


def _run_one(task: ShardTask, item: Any) -> dict:
    try:
        return {"ok": True, "value": task(item)}
    except Exception as exc:
        return _failure(exc)


def _unwrap(outcome: dict) -> Any:
    if not outcome["ok"]:
        raise TaskFailed(outcome["kind"], outcome["message"], outcome["detail"], outcome.get("actionable", False))
    return outcome["value"]


class InlineExecutor:
    """Runs everything in this process: for tests, debugging and tiny inputs."""

    name = "inline"

    def map(self, task: ShardTask, items: list, resources: Resources = Resources()) -> Iterator[Any]:
        task.setup()
        for item in items:
            yield _unwrap(_run_one(task, item))

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Worker:
    """A long-lived Ray actor that runs the items of many maps: its imports, compiled kernels and
    a task's `setup()` (a model) are paid once per worker and task, not once per item."""

    def __init__(self, preload: tuple[str, ...] = ()):
        use_numba_cache()  # a cluster's workers do not inherit the driver's environment
        self.task_id, self.task = None, None
        for module in preload:  # imported while the driver still prepares, not on the first item
            importlib.import_module(module)

    def run(self, task_id: int, task_blob: bytes, item_blob: bytes) -> bytes:
        if task_id != self.task_id:
            self.task, self.task_id = pickle.loads(task_blob), None
            try:
                self.task.setup()  # a model that fails to load fails each item with its own message
            except Exception as exc:
                return pickle.dumps(_failure(exc))
            self.task_id = task_id
        return pickle.dumps(_run_one(self.task, pickle.loads(item_blob)))


def _outcome(call) -> dict:
    """A finished call's outcome; a worker that died more often than Ray retries is a TaskFailed."""
    import ray

    try:
        return pickle.loads(ray.get(call))
    except ray.exceptions.RayError as exc:
        return {"ok": False, "kind": type(exc).__name__, "detail": str(exc),
                "message": f"a Ray worker failed and its retries ran out: {str(exc).splitlines()[0]}"}


class _NotMainThread(logging.Filter):
    """Ray warns that it sets no SIGTERM handler when `ray.init` runs off the main thread; the
    executor sets the same handler itself, on the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


# An embedded Ray's raylet connects to its own object store, started a moment before on another
# thread; when its first attempt comes too early it waits a whole client-connect timeout (1 s)
# before the next, so about every other `ray.init` took a second longer (raylet.out: 1.0 s between
# the store's start and the object manager's). Attempts 50 ms apart give up after the same 10 s.
EMBEDDED_RAY_CONFIG = {"RAY_raylet_client_connect_timeout_milliseconds": "50",
                       "RAY_raylet_client_num_connect_attempts": "200"}


def _exit_on_sigterm(signum, frame):
    sys.exit(signum)  # so that atexit (and with it ray.shutdown) runs


class RayExecutor:
    """A pool of long-lived Ray actors per resource shape, reused across maps and a global pass's
    rounds; items are submitted as plain actor calls (no dataset per map), at most two in flight
    per worker so results stream back in order while the rest wait; a map's last items go only
    to a free worker, never queued behind a busy one while another idles. A worker that dies is
    restarted and its item run again (Ray's actor restarts and task retries).

    Ray starts in the background: `ray.init` (seconds, mostly waiting on Ray's own processes) and
    the first pool's start-up and imports overlap with whatever the caller does before its first
    map; `ready()`, and every map, wait for it."""

    name = "ray"
    IN_FLIGHT_PER_WORKER = 2

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_memory_mb: int | None = None, include_dashboard: bool = False,
                 preload: tuple[str, ...] = ()):
        self._owns_ray = False
        self._pool: tuple[Resources, list] | None = None
        self._maps = 0
        self._preload = tuple(preload)
        self._start_error: BaseException | None = None
        self._started, self._closed = threading.Event(), threading.Event()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self._starting = threading.Thread(target=self._start, name="thresher-ray-start", daemon=True,
                                          args=(address, num_cpus, object_store_memory_mb, include_dashboard))
        self._starting.start()

    def _start(self, address, num_cpus, object_store_memory_mb, include_dashboard) -> None:
        try:
            import ray

            if not ray.is_initialized():
                # Quiet by default; the dashboard, when on, binds to loopback only.
                os.environ.setdefault("RAY_DEDUP_LOGS", "1")
                kwargs: dict[str, Any] = dict(
                    include_dashboard=include_dashboard, dashboard_host="127.0.0.1",
                    logging_level="warning", log_to_driver=True, configure_logging=True,
                )
                if address:
                    kwargs["address"] = address
                else:
                    for name, value in EMBEDDED_RAY_CONFIG.items():
                        os.environ.setdefault(name, value)  # read by the processes ray.init starts
                    kwargs["num_cpus"] = num_cpus
                    if object_store_memory_mb:
                        kwargs["object_store_memory"] = object_store_memory_mb * 2**20
                logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
                ray.init(**kwargs)
                self._owns_ray = True
                if not address:  # an embedded Ray: its processes must end with this driver, however it ends
                    from thresher.pipeline.engine import ray_reaper

                    self._reaper = ray_reaper.start(os.getpid())
            ray.get([w.__ray_ready__.remote() for w in self._workers(Resources())])
        except BaseException as exc:  # raised to the caller by ready()
            self._start_error = exc
        finally:
            self._started.set()
        # Ray starts its processes with PR_SET_PDEATHSIG, which Linux ties to the starting
        # *thread*: they would all be killed the moment this thread ended. It lives until close().
        self._closed.wait()

    def ready(self) -> "RayExecutor":
        """Waits until Ray and the first worker pool are up; raises what starting them raised."""
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def _workers(self, resources: Resources) -> list:
        """The pool for `resources`: reused while the shape stays, replaced when it changes (actors
        hold their CPUs and GPUs while they live, so two pools could starve each other)."""
        import ray

        if self._pool is not None and self._pool[0] == resources:
            return self._pool[1]
        self._end_pool()
        total = ray.cluster_resources()
        slots = total.get("GPU", 0.0) / resources.gpus if resources.gpus else total.get("CPU", 1.0) / resources.cpus
        options: dict[str, Any] = dict(num_cpus=resources.cpus, num_gpus=resources.gpus or None,
                                       max_restarts=-1, max_task_retries=3)
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        cls = ray.remote(_Worker).options(**options)
        workers = [cls.remote(self._preload) for _ in range(max(1, int(slots)))]  # calls queue until each is up
        self._pool = (resources, workers)
        return workers

    def map(self, task: ShardTask, items: list, resources: Resources = Resources()) -> Iterator[Any]:
        """Results in the order of `items`; each item goes to whichever worker is free first."""
        import ray
        from ray import cloudpickle  # tasks may hold closures or classes defined in tests

        if not items:
            return
        self.ready()
        workers = self._workers(resources)
        self._maps += 1
        task_id, task_ref = self._maps, ray.put(cloudpickle.dumps(task))
        in_flight = [0] * len(workers)
        running: dict = {}  # call -> (item index, worker index)
        done: dict[int, dict] = {}
        todo = 0  # the next item to submit

        def submit() -> None:
            nonlocal todo
            while todo < len(items):
                k = min(range(len(workers)), key=in_flight.__getitem__)  # the least busy worker
                if in_flight[k] >= self.IN_FLIGHT_PER_WORKER:
                    return
                if in_flight[k] and len(items) - todo <= len(workers):
                    return  # the last items wait for a worker that is free, not behind a busy one
                running[workers[k].run.remote(task_id, task_ref, cloudpickle.dumps(items[todo]))] = (todo, k)
                in_flight[k] += 1
                todo += 1

        submit()
        for i in range(len(items)):
            while i not in done:
                finished, _ = ray.wait(list(running), num_returns=1)
                for call in finished:
                    j, k = running.pop(call)
                    done[j] = _outcome(call)
                    in_flight[k] -= 1
                submit()
            yield _unwrap(done.pop(i))

    def _end_pool(self) -> None:
        import ray

        if self._pool is not None:
            for w in self._pool[1]:
                ray.kill(w)
            self._pool = None

    def release(self) -> None:
        """End the worker pool (the next map starts a new one); Ray itself stays up."""
        import ray

        try:
            self.ready()
        except BaseException:
            return  # nothing was started

        if ray.is_initialized():
            self._end_pool()

    def close(self) -> None:
        import ray

        self.release()
        if self._owns_ray and ray.is_initialized():
            _stop_autoscaler_monitor()
            ray.shutdown()
        self._closed.set()
        self._starting.join()
        reaper = getattr(self, "_reaper", None)
        if reaper is not None:
            reaper.terminate()
            reaper.wait()
            self._reaper = None


def _stop_autoscaler_monitor() -> None:
    """An embedded Ray is one node with fixed resources: its autoscaler monitor has nothing to
    save, yet `ray.shutdown()` waits a full second for it to honour SIGTERM (its loop sleeps).
    It is killed outright first; a SIGTERM would also make it report its own end as an
    autoscaler failure to the driver."""
    import ray
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    for info in (node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node is not None else []):
        info.process.kill()


def make_executor(kind: str, preload: tuple[str, ...] = (), **ray_options) -> InlineExecutor | RayExecutor:
    """`preload`: modules the tasks to come live in, for workers to import while they wait."""
    return InlineExecutor() if kind == "inline" else RayExecutor(preload=preload, **ray_options)
