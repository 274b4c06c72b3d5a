"""Faults injected from outside the engine: executors that wrap a real one.

CrashAfterStage ends the process abruptly (like SIGKILL) at the first piece of work after a stage
is marked complete. KillWorkerOnce makes the first worker that has written a stage's shard die
before it reports it, once over all workers (a marker file, created atomically, says it happened).

As a script, for runs that must die in a process of their own:
    python tests/faults.py STAGE PIPELINE.yaml                  # run PIPELINE, crash after STAGE (exit 17)
    python tests/faults.py --kill-worker MARKER PIPELINE.yaml   # run PIPELINE, one worker dies once
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CRASH_EXIT = 17


class CrashAfterStage:
    def __init__(self, inner, work_root, stage: str):
        from thresher.pipeline.core import storage

        self.inner, self.work_root, self.stage = inner, storage.location(work_root), stage
        self.name = getattr(inner, "name", "wrapped")

    def map(self, task, items, *args, **kwargs):
        if any((d / "rows" / "_SUCCESS").exists() for d in self.work_root.glob(f"{self.stage}-*")):
            sys.stderr.write(f"faults: exiting after stage {self.stage}\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT)
        yield from self.inner.map(task, items, *args, **kwargs)

    def release(self) -> None:
        self.inner.release()

    def close(self) -> None:
        self.inner.close()


class _DieAfterWriting:
    """The task, in a worker whose engine writes die once: after the file is written, before the
    shard's stats are."""

    def __init__(self, task, marker: Path):
        self.task, self.marker = task, str(marker)

    def setup(self) -> None:
        from thresher.pipeline.engine import runner

        real, marker = runner.write_parquet, self.marker

        def write_then_die(*args, **kwargs):
            real(*args, **kwargs)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)

        runner.write_parquet = write_then_die
        self.task.setup()

    def __call__(self, item):
        return self.task(item)


class KillWorkerOnce:
    def __init__(self, inner, marker: Path):
        self.inner, self.marker = inner, Path(marker)
        self.name = getattr(inner, "name", "wrapped")

    def map(self, task, items, *args, **kwargs):
        from thresher.pipeline.engine.runner import SegmentTask

        if isinstance(task, SegmentTask):
            task = _DieAfterWriting(task, self.marker)
        return self.inner.map(task, items, *args, **kwargs)

    def release(self) -> None:
        self.inner.release()

    def close(self) -> None:
        self.inner.close()


def main(argv: list[str]) -> None:
    from thresher.pipeline.core import storage
    from thresher.pipeline.engine.config import load_config
    from thresher.pipeline.engine.executor import make_executor
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

    kill_worker = argv[0] == "--kill-worker"
    what, pipeline = argv[-2:]
    cfg = load_config(pipeline)
    r = cfg.ray
    inner = make_executor(cfg.executor, address=r.address, num_cpus=r.num_cpus,
                          object_store_memory_mb=r.object_store_memory_mb, include_dashboard=False)
    if kill_worker:  # what: the marker file that lets the kill happen once
        executor = KillWorkerOnce(inner, Path(what))
    else:  # what: the stage after which the driver dies
        work = cfg.work_dir if storage.is_remote(cfg.work_dir) else cfg.resolve(cfg.work_dir)
        executor = CrashAfterStage(inner, work, what)
    Runner(cfg, executor=executor, progress=Progress(False)).run()


if __name__ == "__main__":
    main(sys.argv[1:])
