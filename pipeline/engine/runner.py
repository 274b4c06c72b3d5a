"""The runner: plans streaming segments, runs them through an executor, resumes, accounts.

Stages without a global pass fuse into one segment: one task per shard reads the shard once
and applies them in order, writing each stage's kept and rejected rows. A stage with a global
pass (`partial`/`merge`) starts a new segment: its state is computed over the previous stage's
complete output, saved, then applied. Everything a task does is keyed by shard name, so a
rerun skips finished shards and finished stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.cache import use_numba_cache
from thresher.pipeline.core.files import OWNED, InputError, write_json, write_parquet, writing
from thresher.pipeline.core.stage import GroupShares, Resources, Stage
from thresher.pipeline.core.version import code_version, version
from thresher.pipeline.engine.accounting import AccountingError, StageCounts, check_invariant, shard_stats
from thresher.pipeline.engine.checkpoint import delta, materialize
from thresher.pipeline.engine.config import ConfigError, ConfigIssue, PipelineConfig, StageConfig
from thresher.pipeline.engine.errors import StageContractError, blame
from thresher.pipeline.engine.executor import make_executor
from thresher.pipeline.engine.ids import check_ids
from thresher.pipeline.engine.ids import describe as describe_ids
from thresher.pipeline.engine.ingest import INGEST, IngestTask, InputFile
from thresher.pipeline.engine.lock import RunLock
from thresher.pipeline.engine.manifest import RunRecord, build_manifest, summary_table
from thresher.pipeline.engine.output import add_weight_and_group, as_rejected, copy_rejected, group_totals, share_scale
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.publish import OutputDir
from thresher.pipeline.engine.workdir import RUNS, StageDir, ingest_key, input_listing, path_fingerprints, stage_key


def stage_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % 2**32


# --- pure per-shard logic ----------------------------------------------------------------

def apply_stage(stage: Stage, table: pa.Table, state, batch_rows: int) -> tuple[pa.Table, pa.Table]:
    """Run one stage over a shard in batches; return (kept rows, rejected rows)."""
    kept, rejected, _ = run_stage(stage, table, state, batch_rows)
    return kept, rejected


def run_stage(stage: Stage, table: pa.Table, state, batch_rows: int) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """apply_stage, also returning the kept rows' positions in `table`."""
    columns = type(stage).columns_for(stage.params)
    missing = [c for c in columns.inputs if c not in table.column_names]
    if missing:
        raise StageContractError(f"stage {stage.name} needs column(s) {missing}; the table has "
                                 f"{table.column_names}")
    results = []
    for start in range(0, max(table.num_rows, 1), batch_rows):
        batch = table.slice(start, batch_rows)
        if stage.row_positions:
            batch = batch.append_column(schema.ROW, pa.array(np.arange(start, start + batch.num_rows)))
        out = stage.transform(batch, state)
        if schema.ROW in out.column_names:
            out = out.drop_columns([schema.ROW])
        if out.num_rows != batch.num_rows:
            raise StageContractError(f"stage {stage.name} returned {out.num_rows} rows for {batch.num_rows}: "
                                     "a filter must mark rows (keep/drop_reason), never delete them")
        # A checkpoint stores only a stage's declared outputs: any other column must pass unchanged.
        changed = [c for c in batch.column_names if c not in columns.outputs and c != schema.ROW
                   and (c not in out.column_names or not _same(out[c], batch[c]))]
        if changed:
            raise StageContractError(f"stage {stage.name} changed or dropped column(s) {changed} that it does "
                                     "not declare as outputs; declare them in `outputs`")
        results.append(out)
    result = pa.concat_tables(results, promote_options="default") if len(results) > 1 else results[0]
    absent = [c for c in columns.outputs if c not in result.column_names]
    if absent:
        raise StageContractError(f"stage {stage.name} declares output column(s) {absent} it did not add")
    if schema.KEEP not in result.column_names:
        return result, result.slice(0, 0), np.arange(result.num_rows)
    keep = result[schema.KEEP]
    if keep.null_count:
        raise StageContractError(f"stage {stage.name} left `keep` null for {keep.null_count} rows")
    rejected = result.filter(pc.invert(keep))
    if rejected[schema.DROP_REASON].null_count:
        raise StageContractError(f"stage {stage.name} dropped rows without a drop_reason")
    undeclared = sorted(set(pc.unique(rejected[schema.DROP_REASON]).to_pylist()) - set(stage.drop_reasons))
    if undeclared:
        raise StageContractError(f"stage {stage.name} dropped rows with reason(s) {undeclared} that it does not "
                                 f"declare; declare them in `drop_reasons` (declared: {list(stage.drop_reasons)})")
    kept = result.filter(keep).drop_columns([schema.KEEP, schema.DROP_REASON])
    return kept, rejected, np.flatnonzero(keep.to_numpy(zero_copy_only=False))


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values, NaN equal to NaN (Arrow's equals says NaN != NaN)."""
    if a.equals(b):
        return True
    if a.type != b.type or not pa.types.is_floating(a.type):
        return False
    nan_a, nan_b = pc.is_nan(a), pc.is_nan(b)
    zero = pa.scalar(0, a.type)
    return nan_a.equals(nan_b) and pc.if_else(nan_a, zero, a).equals(pc.if_else(nan_b, zero, b))


# --- shard tasks (picklable; run by any executor) ----------------------------------------

class SegmentTask:
    """Applies a run of fused stages to one shard, writing every stage's checkpoint (checkpoint.py)."""

    def __init__(self, runs: list[tuple[StageConfig, StageDir]], before: list[StageDir], seed: int,
                 batch_rows: int):
        self.runs = runs
        self.before = before  # ingest and the stages before the segment
        self.seed = seed
        self.batch_rows = batch_rows

    def setup(self) -> None:
        self.stages = []
        for cfg, d in self.runs:
            stage = cfg.build(stage_seed(self.seed, d.index))
            stage.setup()
            self.stages.append((stage, d, d.load_state() if cfg.cls.has_global_pass() else None))

    def __call__(self, shard: str) -> list[dict]:
        results, table, chain = [], None, list(self.before)
        for stage, d, state in self.stages:
            if d.shard_done(shard):
                results.append(d.read_stats(shard))
                table = None
                chain.append(d)
                continue
            if table is None:
                table = materialize(chain, shard)
            t0 = time.perf_counter()
            with blame(f"stage {d.label} on shard {shard}"):
                kept, rejected, positions = run_stage(stage, table, stage.shard_state(state, shard), self.batch_rows)
            cols = type(stage).columns_for(stage.params)
            write_parquet(delta(kept, positions, cols.outputs), d.part(shard))
            if rejected.num_rows:
                write_parquet(as_rejected(rejected, stage.name, cols.inputs + cols.outputs), d.rejected_part(shard))
            stats = shard_stats(shard, table.num_rows, kept.num_rows, rejected, t0)
            d.write_stats(shard, stats)
            results.append(stats)
            table = kept
            chain.append(d)
        return results


class ShardReader:
    """Picklable shard name -> table (the rows after the chain's last stage), for a global pass."""

    def __init__(self, chain: list[StageDir]):
        self.chain = chain

    def __call__(self, shard: str, columns: list[str] | None = None) -> pa.Table:
        return materialize(self.chain, shard, columns)


class _FnTask:
    def __init__(self, fn):
        self.fn = fn

    def setup(self) -> None:
        pass

    def __call__(self, item):
        return self.fn(item)


class RunnerFitContext:
    """Runs a stage's global-pass rounds with that stage's resources (a worker pool of that shape,
    its GPUs), like its transform."""

    def __init__(self, executor, shards: list[str], rows: int, source: list[StageDir], target: StageDir,
                 progress: Progress, resources: Resources = Resources()):
        self.executor, self.shards, self.rows, self.source = executor, shards, rows, source  # source: the chain
        self.resources = resources
        self.state_dir = target.state.parent
        self.scratch = self.state_dir / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._progress, self._label, self._round = progress, target.label, 0

    def reader(self) -> ShardReader:
        return ShardReader(self.source)

    def map(self, fn, items: list):
        """Runs fn over items through the executor, a single item too: the executor's workers have
        the round's imports and compiled kernels loaded, where the driver would pay for them (numba's
        set-up alone is 0.4 s), and a call to a live worker costs milliseconds."""
        self._round += 1
        bar = self._progress.bar(f"[{self._label}] global pass, round {self._round}", len(items))
        try:
            for result in self.executor.map(_FnTask(fn), items, self.resources):
                bar.update(0)
                yield result
        finally:
            bar.close()


class FinalizeTask:
    """Weights and groups of one shard; writes it when `write`, else only reports group totals."""

    def __init__(self, chain: list[StageDir], out_dir: Path, group_column: str, weight_columns: list[str],
                 row_group_size: int, scale: dict[str, float] | None = None, write: bool = True):
        self.chain, self.out_dir = chain, out_dir
        self.group_column, self.weight_columns, self.row_group_size = group_column, weight_columns, row_group_size
        self.scale, self.write = scale, write

    def setup(self) -> None:
        pass

    def __call__(self, shard: str) -> dict:
        table = add_weight_and_group(materialize(self.chain, shard), self.group_column,
                                     self.weight_columns, self.scale)
        if table.num_rows and self.write:
            write_parquet(table, self.out_dir / "data" / f"part-{shard}.parquet", self.row_group_size)
        return {"shard": shard, "rows": table.num_rows, "groups": group_totals(table),
                "columns": table.column_names}


# --- planning ----------------------------------------------------------------------------

@dataclass
class RunResult:
    manifest: dict
    output_dir: Path  # an output in object storage: its local copy, or its ObjectPath when it has none
    work_dir: Path  # or storage.ObjectPath
    stage_dirs: dict[str, StageDir]  # label (NN-stage) -> that stage's folders under work_dir
    output_uri: str | None = None  # where the output was uploaded, when it lives in object storage

    def rows(self, label: str) -> pa.Table:
        """The rows a stage kept, over all shards (its checkpoint holds only what it added)."""
        labels = list(self.stage_dirs)
        chain = [self.stage_dirs[x] for x in labels[:labels.index(label) + 1]]
        shards = sorted(p.name[len("part-"):-len(".parquet")] for p in chain[-1].out.glob("part-*.parquet"))
        return pa.concat_tables([materialize(chain, s) for s in shards])


def stage_dirs(cfg: PipelineConfig, listing: list[dict], work_root: Path) -> list[StageDir]:
    """Ingest's and every stage's folder, each keyed by what determines its rows (workdir.py)."""
    code = code_version()
    reading = {"inputs": cfg.raw.model_dump(mode="json")["inputs"], "shard_rows": cfg.shard_rows,
               "on_duplicate_id": cfg.on_duplicate_id}
    dirs = [StageDir(work_root, 0, INGEST, ingest_key(reading, listing, code))]
    for i, st in enumerate(cfg.stages, 1):
        params = {**st.params.model_dump(mode="json"), **path_fingerprints(st.params)}
        dirs.append(StageDir(work_root, i, st.name, stage_key(dirs[-1].key, st.name, params,
                                                             stage_seed(cfg.seed, i), code)))
    return dirs


def plan_segments(stages: list[StageConfig]) -> list[list[int]]:
    """Stage positions (1-based; 0 is ingest) grouped into fused segments: a segment is cut before
    a stage with a global pass and wherever resources change, so a CPU-only filter never runs
    inside a GPU scorer's workers (nor the scorer in a CPU-only pool)."""
    segments: list[list[int]] = []
    for i, st in enumerate(stages, start=1):
        if not segments or st.cls.has_global_pass() or st.resources != stages[segments[-1][-1] - 1].resources:
            segments.append([i])
        else:
            segments[-1].append(i)
    return segments


def _sum_groups(results) -> dict[str, dict]:
    """Rows and weight per group, summed over FinalizeTask results."""
    totals: dict[str, dict] = {}
    for res in results:
        for g, v in res["groups"].items():
            acc = totals.setdefault(g, {"rows": 0, "weight": 0.0})
            acc["rows"] += v["rows"]
            acc["weight"] += v["weight"]
    return dict(sorted(totals.items()))


def _parquet_rows(paths) -> int:
    return sum(storage.parquet_rows(p) for p in paths)


class Runner:
    def __init__(self, config: PipelineConfig, executor=None, progress: Progress | None = None,
                 output_dir: str | Path | None = None, work_dir: str | Path | None = None,
                 from_stage: str | None = None):
        use_numba_cache()  # before any kernel compiles, here and in the workers that inherit it
        self.config = config
        names = [INGEST] + [s.name for s in config.stages]
        if from_stage is not None and from_stage not in names:
            raise ConfigError("--from", [ConfigIssue("--from", f"no stage {from_stage!r} in this pipeline",
                                                     f"stages: {', '.join(names)}")])
        self.from_stage = from_stage
        self.progress = progress or Progress(enabled=True)
        self._executor = executor
        work = str(work_dir) if work_dir else config.work_dir
        self.work_root = (storage.ObjectPath(work) if storage.is_remote(work)
                          else Path(os.path.abspath(work_dir or config.resolve(work))))
        self.remote_work = isinstance(self.work_root, storage.ObjectPath)
        target = str(output_dir) if output_dir else config.output.dir
        self.output_uri = target if storage.is_remote(target) else None
        # The local output dir, if any: with a local work dir, an output in object storage is
        # written and published in the work dir first, then uploaded; with both in object storage,
        # the output is staged in the work dir's prefix and there is no local copy.
        if not self.output_uri:
            self.output_dir = Path(os.path.abspath(output_dir or config.resolve(target)))
        elif not self.remote_work:
            self.output_dir = self.work_root / OWNED / "outputs" / hashlib.sha256(target.encode()).hexdigest()[:16]
        else:
            self.output_dir = None

    def _make_executor(self):
        if self._executor is None:
            r = self.config.ray
            modules = (__name__, *sorted({s.cls.__module__ for s in self.config.stages}))  # what tasks will run
            self._executor = make_executor(self.config.executor, preload=modules, address=r.address,
                                           num_cpus=r.num_cpus,
                                           object_store_memory_mb=r.object_store_memory_mb,
                                           include_dashboard=r.include_dashboard)
            self._owns_executor = True
        return self._executor

    def run(self) -> RunResult:
        cfg = self.config
        t_start = time.perf_counter()
        self._check_dirs()
        inputs, skipped = cfg.input_files(exclude=tuple(str(p) for p in (self.output_dir, self.work_root,
                                                                           self.output_uri) if p))
        for folder, n in skipped.items():
            self.progress.warn(f"note: {n} matched file(s) under {folder} left out: Thresher never reads its "
                               "own output or work dir")
        listing = input_listing(inputs, cfg.input_key == "content")
        dirs = stage_dirs(cfg, listing, self.work_root)
        key = dirs[-1].key  # the last stage's key covers the whole chain
        out = OutputDir(self.output_dir) if self.output_dir is not None else None
        if out is not None and not out.is_ours():
            raise FileExistsError(f"output dir {self.output_dir} is not empty and holds no thresher output; "
                                  "choose an empty or new output dir")
        executor = self._make_executor()  # a Ray executor starts in the background from here
        try:
            with writing(self.work_root):
                (self.work_root / OWNED).mkdir(parents=True, exist_ok=True)
                if self.remote_work:  # a prefix exists through its objects: this one marks it as ours
                    write_json({"thresher": version()}, self.work_root / OWNED / "work-dir.json")
            # An output prefix is held by a lease in it (runs from other machines see it); a local
            # staging copy of it lies in the work dir, which its own lock holds.
            output_lock = (storage.ObjectPath(self.output_uri) / storage.OUTPUT_LOCK if self.output_uri
                           else out.meta / "lock")
            with RunLock(self.work_root / OWNED / "lock", f"work dir {self.work_root}", key), \
                    RunLock(output_lock, f"output dir {self.output_uri or self.output_dir}", key):
                write_json({"config": cfg.canonical(), "inputs": listing,
                            "stages": [d.folder.name for d in dirs]}, self.work_root / RUNS / f"{key}.json")
                self._recompute_from(dirs)
                self.progress.log(f"thresher {version()}: {cfg.name}: {len(inputs)} input file(s), "
                                  f"{len(cfg.stages)} stage(s); work dir {self.work_root}")
                manifest = self._run_locked(executor, inputs, key, dirs, out, t_start)
        finally:
            executor.release()  # its workers end with the run, even when the executor is the caller's
            if getattr(self, "_owns_executor", False):
                executor.close()
                self._executor = None
        return RunResult(manifest, self.output_dir if out is not None else storage.ObjectPath(self.output_uri),
                         self.work_root, {d.label: d for d in dirs}, self.output_uri)

    def _check_dirs(self) -> None:
        """The output and the work dir are two folders, neither inside the other (the output would
        be locked twice, by this run; a work dir inside an output is published with it)."""
        where = {"output.dir (-o)": self.output_uri or self.output_dir, "work_dir (--work-dir)": self.work_root}
        for what, path in where.items():
            if isinstance(path, Path) and path.exists() and not path.is_dir():
                raise InputError(f"{what} {path} is a file, not a folder; give a folder (a new one is made)")
        out, work = self.output_uri or str(self.output_dir), str(self.work_root)
        if out == work or out.startswith(work.rstrip("/") + "/") or work.startswith(out.rstrip("/") + "/"):
            raise InputError(f"output.dir ({out}) and work_dir ({work}) are one folder, or one holds the other; "
                             "give each a folder of its own")

    def _recompute_from(self, dirs: list[StageDir]) -> None:
        """--from STAGE: that stage's and every later stage's checkpoint is removed first."""
        if self.from_stage is None:
            return
        names = [d.name for d in dirs]
        for d in dirs[names.index(self.from_stage):]:
            storage.rmtree(d.folder)

    def _run_locked(self, executor, inputs: list[InputFile], key: str, dirs: list[StageDir], out: OutputDir,
                    t_start: float) -> dict:
        cfg = self.config
        counts: list[StageCounts] = []
        stage_seconds: dict[str, float] = {"executor_start": self._wait_for(executor)}
        self.status: dict[str, str] = {}  # label -> reused | computed
        ingest_stats = self._run_ingest(executor, inputs, dirs[0], stage_seconds)
        shards = sorted(s for st in ingest_stats for s in st["shards"])
        ids = self._check_ids(executor, dirs[0], shards)
        counts.append(self._counts(dirs[0]))
        for segment in plan_segments(cfg.stages):
            self._run_segment(executor, segment, dirs, shards, stage_seconds)
            counts.extend(self._counts(dirs[i]) for i in segment)
        summaries = self._state_summaries(dirs)
        check_invariant(counts)
        self._verify_files(dirs, counts)
        staged = self._staging(out, key)
        try:
            manifest = self._finalize(executor, dirs, shards, counts, inputs, key, stage_seconds, t_start,
                                      summaries, ids, staged)
            if out is not None:
                version_dir = staged
                if isinstance(staged, storage.ObjectPath):  # finalized in the work dir's prefix: fetched
                    with writing(self.output_dir):
                        version_dir = out.new_version(key)
                    storage.copy_tree(staged, version_dir)
                with writing(self.output_dir):
                    out.publish(version_dir)
        except BaseException:
            if out is not None:
                out.clear_unpublished()  # the published output stays as it was
            raise
        if self.output_uri:  # the manifest goes up last: the prefix holds a complete output or none
            storage.publish_tree(out.published() if out is not None else staged, self.output_uri)
        if isinstance(staged, storage.ObjectPath):
            storage.rmtree(staged)
        self.progress.log(summary_table(manifest))
        if describe_ids(ids):
            self.progress.warn(describe_ids(ids))
        return manifest

    def _wait_for(self, executor) -> float:
        """Seconds the run waits for an executor that starts in the background (Ray: the part of
        its start-up that the run's own preparation did not cover), said on the terminal and kept
        apart from the first stage's time, which would otherwise hold it."""
        ready = getattr(executor, "ready", None)
        if ready is None:
            return 0.0
        name = _executor_name(executor)
        self.progress.log(f"[--] {name} executor: waiting for it to start")
        t0 = time.perf_counter()
        ready()
        waited = time.perf_counter() - t0
        self.progress.log(f"[--] {name} executor: ready after {waited:.1f} s")
        return waited

    def _staging(self, out: OutputDir | None, key: str):
        """Where the output is finalized: a fresh version folder of the local output dir, or, with
        the work dir in an object store (where the workers of every node can write), a fresh
        prefix in it (unfinished ones of runs that died go first)."""
        if not self.remote_work:
            with writing(self.output_dir):
                return out.new_version(key)
        storage.rmtree(self.work_root / OWNED / "outputs")
        return self.work_root / OWNED / "outputs" / f"{key}-{time.time_ns()}"

    # --- steps --------------------------------------------------------------------------
    def _check_ids(self, executor, d: StageDir, shards: list[str]) -> dict:
        """Repeated ids over the ingest shards (pipeline/ids.py); its summary is written last."""
        done = d.out / "_ids.json"
        if done.exists():
            return json.loads(done.read_text())
        ctx = RunnerFitContext(executor, shards, self._counts(d).rows_out, [d], d, self.progress)
        summary = check_ids(ctx, self.config.on_duplicate_id, d.part)
        storage.rmtree(ctx.scratch)
        write_json(summary, done)
        return summary

    def _run_ingest(self, executor, inputs: list[InputFile], d: StageDir, seconds: dict) -> list[dict]:
        self.status[d.label] = "reused" if d.complete else "computed"
        if d.complete:
            self.progress.log(f"[00] ingest: reused {d.out}")
            return d.all_stats()
        task = IngestTask(self.config.inputs, self.config.shard_rows, d)
        groups = task.plan(inputs)
        todo = [g for g in groups if not d.shard_done(f"{g[0]:05d}")]
        bar = self.progress.bar("[00] ingest", len(groups))
        for _ in range(len(groups) - len(todo)):
            bar.update(0)
        for stats in executor.map(task, todo):
            bar.update(stats["rows_in"])
        seconds[d.label] = bar.close()
        stats = d.all_stats()
        d.mark_complete(self._counts(d).to_dict())
        return stats

    def _run_segment(self, executor, segment: list[int], dirs: list[StageDir], shards: list[str],
                     seconds: dict) -> None:
        cfg = self.config
        seg_dirs = [dirs[i] for i in segment]
        label = "+".join(d.name for d in seg_dirs)
        self.status.update({d.label: "reused" if d.complete else "computed" for d in seg_dirs})
        if all(d.complete for d in seg_dirs):
            self.progress.log(f"[{segment[0]:02d}] {label}: reused")
            return
        first_cfg = cfg.stages[segment[0] - 1]
        if first_cfg.cls.has_global_pass() and not dirs[segment[0]].has_state(first_cfg.cls.State.tag()):
            self._global_pass(executor, first_cfg, dirs[:segment[0]], dirs[segment[0]], shards, seconds)
        runs = [(cfg.stages[i - 1], dirs[i]) for i in segment]
        todo = [s for s in shards if not all(d.shard_done(s) for d in seg_dirs)]
        bar = self.progress.bar(f"[{segment[0]:02d}] {label}", len(shards))
        for _ in range(len(shards) - len(todo)):
            bar.update(0)
        task = SegmentTask(runs, dirs[:segment[0]], cfg.seed, cfg.batch_rows)
        for results in executor.map(task, todo, first_cfg.resources):  # the same for the whole segment
            bar.update(results[0]["rows_in"])
        elapsed = bar.close()
        for d in seg_dirs:
            seconds[d.label] = seconds.get(d.label, 0.0) + elapsed / len(seg_dirs)
            d.mark_complete(self._counts(d).to_dict())

    def _global_pass(self, executor, cfg: StageConfig, source: list[StageDir], target: StageDir,
                     shards: list[str], seconds: dict) -> None:
        t0 = time.perf_counter()
        stage = cfg.build(stage_seed(self.config.seed, target.index))
        ctx = RunnerFitContext(executor, shards, self._counts(source[-1]).rows_out, source, target, self.progress,
                               cfg.resources)
        with blame(f"stage {target.label}, global pass"):
            state = stage.fit(ctx)
        if not isinstance(state, cfg.cls.State):
            raise StageContractError(f"stage {target.label}: its global pass returned a {type(state).__name__}, "
                                     f"not its declared State record {cfg.cls.State.__name__}")
        target.save_state(state, stage.summarize_state(state), cfg.cls.State.tag(), stage.group_shares(state))
        storage.rmtree(ctx.scratch)
        seconds[f"{target.label}:global"] = time.perf_counter() - t0

    def _counts(self, d: StageDir) -> StageCounts:
        counts = StageCounts(d.name)
        for stats in d.all_stats():
            counts.add(stats)
        return counts

    def _verify_files(self, dirs: list[StageDir], counts: list[StageCounts]) -> None:
        """The files on disk must hold exactly the rows the stats claim."""
        for d, c in zip(dirs, counts):
            kept = _parquet_rows(sorted(d.out.glob("part-*.parquet")))
            rejected = _parquet_rows(sorted(d.rejected.glob("part-*.parquet")))
            if kept != c.rows_out or rejected != sum(c.rejected.values()):
                raise AccountingError(f"stage {d.label} ({d.folder}): files hold {kept} kept + {rejected} rejected "
                                      f"rows but the stats say {c.rows_out} + {sum(c.rejected.values())}; the work "
                                      f"dir was modified or a shard is corrupt: rerun with --from {d.name}")

    def _group_shares(self, dirs: list[StageDir]) -> GroupShares | None:
        """The shares that the last stage setting them (a mixture) saved with its state, if any."""
        return next((shares for d in reversed(dirs) if (shares := d.load_shares()) is not None), None)

    def _state_summaries(self, dirs: list[StageDir]) -> dict[str, dict]:
        out = {}
        for cfg, d in zip(self.config.stages, dirs[1:]):
            if cfg.cls.has_global_pass():
                summary = d.load_summary()
                if summary:
                    out[d.label] = summary
        return out

    def _finalize(self, executor, dirs, shards, counts, inputs, key, seconds, t_start, summaries, ids,
                  out: Path) -> dict:
        """Writes the whole output into `out`, a fresh version folder that is published after."""
        t0 = time.perf_counter()
        cfg = self.config
        group_column, scale = cfg.output.group_column, None
        weights = sorted({w for st in cfg.stages for w in st.columns.weights})
        shares = self._group_shares(dirs)
        if shares is not None:  # each group's total weight becomes its share
            group_column = shares.column
            totals = _sum_groups(executor.map(FinalizeTask(dirs, out, group_column, weights, 1, write=False),
                                              shards))
            scale, without = share_scale({g: v["weight"] for g, v in totals.items()}, shares.shares)
            write_json({**shares.record, "groups_without_weight": without}, out / shares.file)
        task = FinalizeTask(dirs, out, group_column, weights, cfg.output.row_group_size, scale)
        results = list(executor.map(task, shards))
        if cfg.output.write_rejected:
            copy_rejected([(d.label, d.rejected) for d in dirs], out)
        files = sorted((out / "data").glob("*.parquet"))
        if _parquet_rows(files) != counts[-1].rows_out:
            raise AccountingError(f"{out}/data holds {_parquet_rows(files)} rows, expected {counts[-1].rows_out}")
        seconds["finalize"] = time.perf_counter() - t0
        manifest = build_manifest(RunRecord(
            name=cfg.name, key=key, seed=cfg.seed, work_dir=str(self.work_root), input_files=len(inputs),
            input_bytes=sum(f.size for f in inputs), duplicate_ids=ids, counts=counts,
            labels=[d.label for d in dirs], status=self.status, summaries=summaries, output_rows=sum(r["rows"] for r in results),
            output_files=[f.name for f in files],
            output_columns=next((r["columns"] for r in results if r["rows"]), []), groups=_sum_groups(results),
            wall_seconds=time.perf_counter() - t_start, stage_seconds=seconds,
            executor=_executor_name(executor)))
        write_json(manifest, out / "manifest.json")
        return manifest


def _executor_name(executor) -> str:
    """What the terminal and the manifest call an executor: ray, inline, or a caller's own one's class."""
    return getattr(executor, "name", type(executor).__name__)


def run_pipeline(config: PipelineConfig, **kwargs) -> RunResult:
    return Runner(config, **kwargs).run()
