"""The engine's errors, and `blame`, which puts where an error happened in front of any error that
does not say so itself. Each error class here already names its stage, shard or file."""

from __future__ import annotations

import contextlib

from thresher.pipeline.core.errors import ActionableError


class StageContractError(ActionableError, RuntimeError):
    """A stage broke its declared contract (a missing column, a deleted row, an undeclared output)."""


class StageFailed(RuntimeError):
    """An unexpected error inside a stage, with the stage and the shard or file it was working on."""


class TaskFailed(RuntimeError):
    """An error raised inside an executor's task, as the driver reports it: the task's own message
    (e.g. an InputError naming the bad file), its kind, and the worker's traceback as `detail`."""

    def __init__(self, kind: str, message: str, detail: str = "", actionable: bool = False):
        self.kind, self.detail, self.actionable = kind, detail, actionable  # actionable: an ActionableError
        super().__init__(message)


_NAMED = (ActionableError, StageFailed, TaskFailed)  # already say where


@contextlib.contextmanager
def blame(where: str, error: type[Exception] = StageFailed):
    """Any error that does not say where it happened gets `where` in front of it."""
    try:
        yield
    except _NAMED:
        raise
    except Exception as exc:
        raise error(f"{where}: {type(exc).__name__}: {exc}") from exc
