"""The stage contract: a stage declares its columns and resources and only computes.

The engine (runner + executor) does batching, counting, writing and distribution. A stage
never sees Ray: `transform` is a pure function of a `pyarrow.Table`, and a stage that needs a
corpus-wide view exposes it as map-reduce (`partial` per shard, associative `merge`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterator, Protocol, get_args, get_origin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from thresher.pipeline.core import schema


@dataclass(frozen=True)
class Resources:
    """Everything the executor needs to place a stage's work."""

    cpus: float = 1.0
    gpus: float = 0.0
    # Memory one worker needs, reserved from the scheduler when set (None: Ray's default).
    memory_gb: float | None = None
    # (Every stage runs in long-lived workers that call its `setup` once: a model loads once per
    # worker, never per shard; the executor keeps one pool per resource shape.)


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


PATH, COLUMN, OUTPUT = _Marker("PATH"), _Marker("COLUMN"), _Marker("OUTPUT")
# A parameter that names a file or folder (a model, a labelled set): a path relative to the YAML
# file, as inputs are, or an s3:// / gs:// URI, which the stage sees as its node's cached copy
# (pipeline/core/storage.py). The config resolves every parameter of this type, optional ones too.
LocalPath = Annotated[str, PATH]
# A file or folder a stage writes (an index for later runs): relative to the YAML file or a URI,
# resolved like a LocalPath but never fetched.
OutputPath = Annotated[str, OUTPUT]
# A parameter that names a column the stage reads: it is one of the stage's inputs, checked
# before anything runs like the columns the stage class declares.
ColumnName = Annotated[str, COLUMN]


def _has_marker(field, marker: _Marker) -> bool:
    def marked(annotation) -> bool:
        if get_origin(annotation) is Annotated:
            return marker in get_args(annotation)[1:] or marked(get_args(annotation)[0])
        return any(marked(a) for a in get_args(annotation))
    return marker in field.metadata or marked(field.annotation)


def is_path_field(field) -> bool:
    """Whether a pydantic field is a LocalPath (or an optional one)."""
    return _has_marker(field, PATH)


def is_output_field(field) -> bool:
    """Whether a pydantic field is an OutputPath (or an optional one)."""
    return _has_marker(field, OUTPUT)


def is_column_field(field) -> bool:
    """Whether a pydantic field is a ColumnName (or an optional one)."""
    return _has_marker(field, COLUMN)


@dataclass(frozen=True)
class Columns:
    """A configured stage's columns: what it reads, what it adds, which of those are weights (the
    final `weight` is the product of every stage's weight columns), and which inputs a parameter
    named (input column -> parameter), so an error can point at that parameter's YAML line."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: tuple[str, ...] = ()
    named_by: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupShares:
    """The share of the output's total weight each group gets, set by a stage (a mixture): the
    output writer scales each group's weights to it, and writes `record` to the output's `file`."""

    column: str  # the column whose values are the groups
    shares: dict[str, float]
    file: str
    record: dict


@dataclass(frozen=True)
class StateRecord:
    """Base of a global pass's state: a small typed record (never an ad-hoc dict), kept in the work
    dir. A stage bumps its record's VERSION whenever the fields or their meaning change; a record
    saved under another version is recomputed, never misread."""

    VERSION: ClassVar[int] = 1

    @classmethod
    def tag(cls) -> dict:
        return {"record": f"{cls.__module__}.{cls.__qualname__}", "version": cls.VERSION}


class Params(BaseModel):
    """Base for a stage's parameters: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadShard(Protocol):
    """Picklable: a shard's rows as the stage before this one left them, only `columns` when
    given (a global pass that needs two columns of a wide table reads only those)."""

    def __call__(self, shard: str, columns: list[str] | None = None) -> pa.Table: ...


class FitContext(Protocol):
    """What a global pass gets from the runner: the shards, a way to read one, a parallel map
    (the executor: Ray or in-process, with the stage's declared resources: its GPU when it
    declares one) and a scratch folder for intermediate files. A pass that does heavy work once
    (training a model) maps it over a single item, so that it runs where the stage's resources
    are, never in the driver (the default `fit` does so with `merge`)."""

    shards: list[str]
    rows: int  # over all shards: what sizes a pass's partitions (data volume, never the shard count)
    scratch: Path  # removed after the fit
    state_dir: Path  # kept: for state too large to pickle whole (see Stage.shard_state)

    def reader(self) -> ReadShard: ...
    def map(self, fn: Callable[[Any], Any], items: list) -> Iterator[Any]: ...  # fn picklable


class _PartialFn:
    def __init__(self, stage: "Stage", read: ReadShard):
        self.stage, self.read, self._ready = stage, read, False

    def __call__(self, shard: str):
        if not self._ready:
            self.stage.setup()
            self._ready = True
        return shard, self.stage.partial(self.read(shard))


class Stage:
    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = (schema.TEXT,)
    outputs: ClassVar[tuple[str, ...]] = ()
    # Outputs that multiply into the final `weight` (a subset of `outputs`).
    weights: ClassVar[tuple[str, ...]] = ()
    # The reasons a filter gives the rows it drops (mark_dropped); another reason stops the run.
    drop_reasons: ClassVar[tuple[str, ...]] = ()
    # A small working configuration (YAML parameters; model paths as `thresher demo` names them
    # under models/): shown by `thresher stages NAME` and docs/STAGES.md, and run by the tests.
    example: ClassVar[dict[str, Any]] = {}
    resources: ClassVar[Resources] = Resources()
    Params: ClassVar[type[Params]] = Params
    # The record a global pass returns (fit / merge): the runner checks it and its version.
    State: ClassVar[type[StateRecord] | None] = None
    # True when `transform` needs each row's position in its shard (column schema.ROW); a global
    # pass reads whole shards, where the position is the row's index.
    row_positions: ClassVar[bool] = False

    @classmethod
    def resources_for(cls, params: Params) -> Resources:
        """Resources of a configured stage (e.g. a GPU only when the parameters ask for one)."""
        return cls.resources

    @classmethod
    def columns_for(cls, params: Params) -> Columns:
        """Columns of a configured stage: the class's own plus every ColumnName parameter that is
        set. A stage whose outputs depend on its parameters extends this."""
        named = {getattr(params, n): n for n, f in type(params).model_fields.items()
                 if is_column_field(f) and getattr(params, n)}
        inputs = cls.inputs + tuple(c for c in named if c not in cls.inputs)
        return Columns(inputs, cls.outputs, cls.weights, named)

    def __init__(self, params: Params | None = None, seed: int = 0):
        self.params = params if params is not None else self.Params()
        self.seed = seed

    # --- optional global pass -------------------------------------------------------
    @classmethod
    def has_global_pass(cls) -> bool:
        return cls.partial is not Stage.partial or cls.fit is not Stage.fit

    def fit(self, ctx: FitContext) -> Any:
        """The corpus-wide state. Default: `partial` per shard in parallel, then `merge` of the parts
        in shard order as one task: both on the executor's workers with the stage's resources, since
        a merge may train a model (the mixture's proxy runs, a topic model), never in the driver.
        Stages whose pass is several map-reduce rounds override this, still using only `ctx.map`
        over pure functions."""
        return next(iter(ctx.map(self.merge, [self.partials(ctx)])))

    def partials(self, ctx: FitContext) -> list[Any]:
        """`partial` of every shard, in parallel through the executor, in shard order."""
        parts = sorted(ctx.map(_PartialFn(self, ctx.reader()), ctx.shards), key=lambda p: p[0])
        return [p for _, p in parts]

    def partial(self, table: pa.Table) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def merge(self, parts: list[Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def summarize_state(self, state: Any) -> dict:
        """A few JSON-able figures of the fitted state (thresholds, counts) for the manifest and report."""
        return {}

    def group_shares(self, state: Any) -> GroupShares | None:
        """The output's group shares, when this stage sets them from its fitted `state` (the last
        such stage in a pipeline wins); None: it sets none. The runner asks once, right after the
        global pass, and keeps the answer with the state."""
        return None

    def shard_state(self, state: Any, shard: str) -> Any:
        """The part of the state one shard's transform needs; a stage whose state grows with the
        corpus stores it per shard under `ctx.state_dir` and loads only that shard's slice here."""
        return state

    # --- per batch ------------------------------------------------------------------
    def setup(self) -> None:
        """Load models or other heavy resources; called once per worker before transform."""

    def transform(self, table: pa.Table, state: Any = None) -> pa.Table:
        raise NotImplementedError


def mark_dropped(table: pa.Table, drop, reason: str) -> pa.Table:
    """Mark rows a filter rejects; a row already marked keeps its first reason."""
    drop = np.asarray(drop, dtype=bool)
    keep = pa.array(~drop)
    reasons = pa.array(np.where(drop, reason, None), type=pa.string())
    if schema.KEEP in table.column_names:
        keep = pc.and_(table[schema.KEEP], keep)
        reasons = pc.coalesce(table[schema.DROP_REASON], reasons)
        table = table.drop_columns([schema.KEEP, schema.DROP_REASON])
    return table.append_column(schema.KEEP, keep).append_column(schema.DROP_REASON, reasons)


def lookup(column: pa.Array | pa.ChunkedArray, mapping: dict[str, float], default: float = 0.0) -> np.ndarray:
    """mapping[value] for each row of a string column (default for nulls and unknown values),
    looked up once per distinct value."""
    enc = pc.dictionary_encode(column)
    out = []
    for c in enc.chunks if isinstance(enc, pa.ChunkedArray) else [enc]:
        values = [mapping.get(v, default) for v in c.dictionary.to_pylist()] + [default]
        idx = np.asarray(c.indices.fill_null(len(values) - 1), dtype=np.int64)
        out.append(np.array(values, dtype=np.float64)[idx])
    return np.concatenate(out) if out else np.zeros(0)
