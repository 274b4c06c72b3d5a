"""Executors run a shard task over a list of work items; Ray is one of them, never the logic.

A task is a picklable object with `setup()` (load models once per worker) and
`__call__(item) -> result`. Errors raised inside a task come back as `TaskFailed` with the
task's own message (e.g. an InputError naming the bad file), not a wall of Ray traceback.
"""

from __future__ import annotations

import os
import pickle
import traceback
from typing import Any, Iterator, Protocol

from thresher.pipeline.stage import Resources


class ShardTask(Protocol):
    def setup(self) -> None: ...
    def __call__(self, item: Any) -> Any: ...


class TaskFailed(RuntimeError):
    def __init__(self, kind: str, message: str, detail: str = ""):
        self.kind, self.detail = kind, detail
        super().__init__(message)


def _run_one(task: ShardTask, item: Any) -> dict:
    try:
        return {"ok": True, "value": task(item)}
    except Exception as exc:  # reported to the driver, which raises TaskFailed
        return {"ok": False, "kind": type(exc).__name__, "message": str(exc), "detail": traceback.format_exc()}


def _unwrap(outcome: dict) -> Any:
    if not outcome["ok"]:
        raise TaskFailed(outcome["kind"], outcome["message"], outcome["detail"])
    return outcome["value"]


class InlineExecutor:
    """Runs everything in this process: for tests, debugging and tiny inputs."""

    name = "inline"

    def map(self, task: ShardTask, items: list, resources: Resources = Resources()) -> Iterator[Any]:
        task.setup()
        for item in items:
            yield _unwrap(_run_one(task, item))

    def close(self) -> None:
        pass


class _RayTaskFn:
    """Adapter from a Ray Data batch of item indices to the task's per-item results."""

    def __init__(self, task_blob: bytes, items_blob: bytes):
        self.task = pickle.loads(task_blob)
        self.items = pickle.loads(items_blob)
        self.task.setup()

    def __call__(self, batch):
        import pyarrow as pa

        out = [pickle.dumps(_run_one(self.task, self.items[i])) for i in batch["i"].to_pylist()]
        return pa.table({"outcome": pa.array(out, type=pa.binary())})


class RayExecutor:
    """Ray Data over work items: plain tasks for stateless work, an actor pool for models."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_memory_mb: int | None = None, include_dashboard: bool = False):
        import ray

        self._owns_ray = False
        self._open: set = set()
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
                kwargs["num_cpus"] = num_cpus
                if object_store_memory_mb:
                    kwargs["object_store_memory"] = object_store_memory_mb * 2**20
            ray.init(**kwargs)
            self._owns_ray = True
            if not address:  # an embedded Ray: its processes must end with this driver, however it ends
                from thresher.pipeline import ray_reaper

                self._reaper = ray_reaper.start(os.getpid())
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the runner shows its own, per shard and row
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False

    def map(self, task: ShardTask, items: list, resources: Resources = Resources()) -> Iterator[Any]:
        """One Ray Data map over the items: tasks of `resources.cpus`/`gpus` each, or, for a stage
        that needs an actor, a pool of long-lived actors."""
        import ray
        import ray.data

        if not items:
            return iter(())
        ds = ray.data.from_items([{"i": i} for i in range(len(items))], override_num_blocks=len(items))
        from ray import cloudpickle  # tasks may hold closures or classes defined in tests

        args = (cloudpickle.dumps(task), cloudpickle.dumps(items))
        extra = {"memory": int(resources.memory_gb * 2**30)} if resources.memory_gb else {}
        gpus = resources.gpus
        if resources.actor:
            # Fractional CPUs per model actor: on a 2-core machine whole-CPU actors starve the
            # read tasks. One actor per CPU (or per GPU share) at most, never more than shards.
            cluster = ray.cluster_resources()
            slots = cluster.get("GPU", 0.0) / gpus if gpus else cluster.get("CPU", 1.0)
            size = max(1, min(len(items), int(slots)))
            ds = ds.map_batches(_RayTaskFn, fn_constructor_args=args, batch_size=1, batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=size), num_cpus=min(resources.cpus, 0.5),
                                num_gpus=gpus or None, **extra)
        else:
            ds = ds.map_batches(_call_task, fn_args=args, batch_size=1, batch_format="pyarrow",
                                num_cpus=resources.cpus, num_gpus=gpus or None, **extra)
        return self._results(ds)

    def _results(self, ds) -> Iterator[Any]:
        """Outcomes in order. The Ray Data iterator is closed here, or by close() before Ray shuts
        down, never by the garbage collector afterwards (which would bury the task's real error
        under a "Ray is not initialized" traceback)."""
        rows = iter(ds.iter_rows())
        self._open.add(rows)
        try:
            for row in rows:
                yield _unwrap(pickle.loads(row["outcome"]))
        finally:
            self._open.discard(rows)
            rows.close()

    def close(self) -> None:
        import ray

        for rows in list(self._open):  # a map its caller left half-way (an error in the loop body)
            rows.close()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        reaper = getattr(self, "_reaper", None)
        if reaper is not None:
            reaper.terminate()
            reaper.wait()
            self._reaper = None


def _call_task(batch, task_blob: bytes, items_blob: bytes):
    return _RayTaskFn(task_blob, items_blob)(batch)


def make_executor(kind: str, **ray_options) -> InlineExecutor | RayExecutor:
    return InlineExecutor() if kind == "inline" else RayExecutor(**ray_options)
