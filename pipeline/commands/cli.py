"""`thresher`: run, validate and inspect YAML pipelines."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import gc as _gc  # `gc` below is the command
import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from thresher.pipeline.commands.domain_losses import MAX_LOSS, MAX_REASON_LOSS, alarms, domain_losses
from thresher.pipeline.core.cache import use_numba_cache
from thresher.pipeline.core.errors import ActionableError
from thresher.pipeline.core.files import InputError
from thresher.pipeline.engine.config import ConfigError, load_config
from thresher.pipeline.engine.errors import TaskFailed

app = typer.Typer(help="Thresher: pretraining data curation pipelines on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

# The command's last exit handler (they run last-registered first): the interpreter's final garbage
# collection then skips the objects alive at exit, numba's and pyarrow's type graphs among them,
# which took 0.25 s of every command's exit; the OS frees them anyway. Other exit handlers (Ray's
# shutdown, temporary folders) have run by then.
atexit.register(_gc.freeze)


_DEBUG = False  # --debug: an error's traceback is printed too


@app.callback()
def _every_command(debug: bool = typer.Option(False, "--debug", help="print an error's traceback too")) -> None:
    global _DEBUG
    _DEBUG = debug
    use_numba_cache()  # numba's kernel cache goes where Thresher keeps it (core/cache.py)


def _fail(message: str, code: int = 2, exc: BaseException | None = None) -> None:
    if exc is not None and _DEBUG:
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _run_errors():
    """An error a user can act on ends the command with its one line (its traceback only with
    --debug); an unexpected one keeps its traceback."""
    from thresher.pipeline.engine.errors import StageFailed

    try:
        yield
    except (ActionableError, FileExistsError) as exc:
        _fail(str(exc), exc=exc)
    except StageFailed as exc:
        _fail(f"{exc}\n{''.join(traceback.format_exception(exc.__cause__ or exc))}")
    except TaskFailed as exc:
        if exc.actionable:
            if _DEBUG:
                typer.echo(exc.detail.rstrip(), err=True)
            _fail(str(exc))
        _fail(f"{exc} [{exc.kind}]\n{exc.detail}")
    except OSError as exc:  # a write outside the helpers that name their file
        if exc.errno != errno.ENOSPC:
            raise
        _fail(f"no space left on device ({exc}); free space, or point work_dir and output.dir at a larger "
              "disk, then rerun: finished shards are kept", exc=exc)


def _explained(command):
    """A command whose errors end as _run_errors says."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        with _run_errors():
            return command(*args, **kwargs)
    return run


@app.command()
@_explained
def validate(pipeline: Path = typer.Argument(..., help="pipeline YAML")) -> None:
    """Check a pipeline file: every error with its YAML path, line and a hint."""
    try:
        cfg = load_config(pipeline)
    except ConfigError as exc:
        _fail(str(exc))
    typer.echo(f"{pipeline}: ok ({len(cfg.inputs)} input spec(s), stages: "
               f"{', '.join(s.name for s in cfg.stages) or 'none'})")


@app.command()
@_explained
def run(
    pipeline: Path = typer.Argument(..., help="pipeline YAML"),
    address: Optional[str] = typer.Option(None, help="use an existing Ray cluster (ray://... or auto)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="override output.dir (a path or s3:// gs://)"),
    work_dir: Optional[str] = typer.Option(None, help="override work_dir (a path or s3:// gs://)"),
    executor: Optional[str] = typer.Option(None, help="ray (default) or inline (no Ray, one process)"),
    from_stage: Optional[str] = typer.Option(None, "--from", help="recompute this stage and every later one"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    progress_records: bool = typer.Option(False, "--progress-records", hidden=True,
                                          help="progress records on stdout, for `thresher status` (cluster jobs)"),
) -> None:
    """Run a pipeline (embedded local Ray unless --address). Each stage's checkpoint is keyed by
    what determines it, so a rerun reuses every stage whose inputs and parameters are unchanged,
    and resumes an interrupted one."""
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

    try:
        cfg = load_config(pipeline)
    except ConfigError as exc:
        _fail(str(exc))
    with _run_errors():
        cfg = cfg.with_overrides(**({"ray": {"address": address}} if address else {}),
                                 **({"executor": executor} if executor else {}))
        progress = Progress(enabled=not quiet, records=sys.stdout if progress_records else None)
        result = Runner(cfg, progress=progress, output_dir=output, work_dir=work_dir,
                        from_stage=from_stage).run()
    where = result.output_uri or str(result.output_dir)
    typer.echo(f"output: {where} ({result.manifest['output']['rows']:,} rows); "
               f"manifest: {where.rstrip('/')}/manifest.json")
    _echo_alarms(result.output_dir)


def _echo_alarms(out_dir, **limits) -> None:
    """The report's alarms (a domain losing most of its rows, one reason taking a large share of
    one), printed where a user looks after a run; needs a local copy of the output's rejected rows
    (an output in object storage without one: `thresher report` gives them)."""
    if not isinstance(out_dir, Path) or not (out_dir / "rejected").is_dir():
        return
    for line in alarms(domain_losses(out_dir, with_bytes=False), **limits):
        typer.echo(f"alarm: {line}", err=True)


@app.command()
@_explained
def gc(
    work_dir: str = typer.Argument(..., help="a work dir Thresher wrote (a path or s3:// gs://)"),
    pipelines: list[Path] = typer.Argument(..., help="the pipelines whose checkpoints to keep"),
    yes: bool = typer.Option(False, "--yes", help="remove them (without it: only list them)"),
) -> None:
    """Remove the checkpoints in WORK_DIR that none of the given pipelines (with their inputs as
    they are now) points to. Lists them first; removes them only with --yes. Holds the work dir's
    lock meanwhile: while a run uses the work dir, gc lists and removes nothing."""
    from thresher.pipeline.core import storage
    from thresher.pipeline.core.files import OWNED
    from thresher.pipeline.engine.lock import LockHeld, RunLock
    from thresher.pipeline.engine.runner import stage_dirs
    from thresher.pipeline.engine.workdir import input_listing, unreferenced

    work = storage.location(work_dir)
    work = work if isinstance(work, storage.ObjectPath) else work.resolve()
    keep: set[str] = set()
    with _run_errors():
        for pipeline in pipelines:
            cfg = load_config(pipeline)
            files, _ = cfg.input_files(exclude=(cfg.absolute(cfg.output.dir), work))
            keep.update(d.folder.name for d in stage_dirs(cfg, input_listing(files, cfg.input_key == "content"),
                                                          work))
        unreferenced(work, keep)  # a folder that is no work dir is refused before its lock is made
        try:
            lock = RunLock(work / OWNED / "lock", f"work dir {work}", "gc").acquire()
        except LockHeld as exc:
            _fail(f"{exc}; gc listed and removed nothing: run it again once that run has ended")
        try:
            stale = unreferenced(work, keep)
            total = sum(size for _, size in stale)
            for path, size in stale:
                typer.echo(f"{'removing' if yes else 'would remove'} {path} ({size / 2**20:,.1f} MiB)")
            for path, _ in stale if yes else ():
                storage.rmtree(path) if path.is_dir() else path.unlink()
        finally:
            lock.release()
    typer.echo(f"{len(stale)} item(s), {total / 2**20:,.1f} MiB {'removed' if yes else 'to remove: rerun with --yes'}"
               if stale else f"{work}: nothing to remove ({len(keep)} checkpoint(s) in use)")


def _fetched(path: str) -> Path:
    """A local path for PATH: itself, or this node's cached copy of an object or prefix."""
    from thresher.pipeline.core import storage

    with _run_errors():
        return Path(storage.cached_copy(str(path)))


@contextlib.contextmanager
def _written(target: str):
    """A local path to write TARGET at: itself, or for an object-store URI a temporary one whose
    files (TARGET itself, a folder of that name, or PREFIX.* siblings) are uploaded next to it."""
    import tempfile

    from thresher.pipeline.core import storage

    if not storage.is_remote(str(target)):
        yield Path(target)
        return
    dest = storage.ObjectPath(str(target))
    with tempfile.TemporaryDirectory(prefix="thresher-upload-") as tmp:
        yield Path(tmp) / dest.name
        with _run_errors():
            storage.copy_tree(Path(tmp), dest.parent)


def _pipeline_files(pipeline: Path):
    """Each input file's usable rows, with the ids its ingest gives them, one file at a time: a
    command that samples the corpus holds one file and its sample, never the whole corpus."""
    from thresher.pipeline.engine.ingest import read_input

    cfg = load_config(pipeline)
    files, _ = cfg.input_files(exclude=(cfg.absolute(cfg.output.dir), cfg.absolute(cfg.work_dir)))
    for f in files:
        yield read_input(f, cfg.inputs[f.spec_index])[0]


@app.command("train-reference")
@_explained
def train_reference_cmd(
    pipeline: Path = typer.Argument(..., help="pipeline YAML whose inputs are the corpus"),
    output: str = typer.Option(..., "--output", "-o", help="folder for the model + tokenizer (or s3:// gs://)"),
    fraction: float = typer.Option(0.05, help="share of documents in the reference split D_ref"),
    size: str = typer.Option("tiny", help="tiny | small | 125m"),
    vocab_size: int = typer.Option(4096),
    steps: int = typer.Option(300),
    seq_len: Optional[int] = typer.Option(None, help="default: the size's context length"),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(3e-3),
    seed: int = typer.Option(0),
) -> None:
    """Train a byte-level BPE + small GPT-style LM on a random split of the corpus; the split's
    ids are saved so ref_perplexity excludes them from scoring."""
    import pyarrow as pa

    from thresher.scorers.reference_lm import SIZES, train_reference_split
    from thresher.scorers.sampling import sample_mask

    if size not in SIZES:
        _fail(f"--size must be one of {', '.join(SIZES)}")
    if not 0 < fraction <= 1:
        _fail("--fraction must be in (0, 1]")
    total, parts = 0, []
    try:
        for rows in _pipeline_files(pipeline):
            total += rows.num_rows
            parts.append(rows.select(["id", "text"]).filter(pa.array(sample_mask(rows["id"], fraction, seed))))
    except (ConfigError, InputError) as exc:
        _fail(str(exc))
    ref = pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string())})
    if ref.num_rows == 0:
        _fail(f"the reference split is empty ({total} documents x {fraction}); raise --fraction")
    typer.echo(f"reference split: {ref.num_rows:,} of {total:,} documents", err=True)
    with _written(output) as local:
        info = train_reference_split(ref["id"].to_pylist(), ref["text"].to_pylist(), local, fraction, seed,
                                     {"pipeline": str(pipeline)}, size=size, vocab_size=vocab_size, steps=steps,
                                     seq_len=seq_len, batch_size=batch_size, lr=lr,
                                     log=lambda m: typer.echo(m, err=True))
    typer.echo(f"reference model: {output} ({info['parameters']:,} parameters, final loss {info['final_loss']:.3f})")


@app.command("bpb-matrix")
@_explained
def bpb_matrix_cmd(
    pipeline: Path = typer.Argument(..., help="pipeline YAML whose inputs (and domains) are the corpus"),
    models: list[str] = typer.Option(..., "--models", help="causal LM folders, local or s3:// gs:// (repeat it)"),
    output: str = typer.Option(..., "--output", "-o", help="the matrix, as Parquet (a path or s3:// gs://)"),
    pages: int = typer.Option(50, help="pages per domain (the same fixed sample for every model)"),
    max_length: int = typer.Option(512, help="window length in tokens"),
) -> None:
    """Bits per byte of each model on each domain (rows: models; columns: domains)."""
    from thresher.pipeline.core.files import write_parquet
    from thresher.scorers.bpb_matrix import bpb_matrix
    from thresher.scorers.domain_sample import merge_samples, sample_part

    try:
        parts = [sample_part(rows["domain"], rows["id"], rows["text"], pages) for rows in _pipeline_files(pipeline)]
    except (ConfigError, InputError) as exc:
        _fail(str(exc))
    sample = merge_samples(parts, pages)
    try:
        table = bpb_matrix([_fetched(m) for m in models], {d: v["texts"] for d, v in sample.items()}, max_length)
    except FileNotFoundError as exc:
        _fail(str(exc))
    with _written(output) as local:
        write_parquet(table, local)
    typer.echo(f"{table.num_rows} model(s) x {table.num_columns - 1} domain(s) -> {output}")


@app.command("train-kenlm")
@_explained
def train_kenlm_cmd(
    corpus: list[str] = typer.Argument(..., help=".txt (a document per line), .jsonl(.gz) or .parquet files"),
    output: str = typer.Option(..., "--output", "-o", help="model prefix: writes PREFIX.arpa and PREFIX.bin"),
    order: int = typer.Option(5, help="n-gram order"),
    text_column: str = typer.Option("text"),
    memory: str = typer.Option("20%", help="lmplz -S memory cap"),
    split_punctuation: bool = typer.Option(False, "--split-punctuation",
                                           help="split punctuation from words (then set harmful_filter's "
                                                "split_punctuation: true)"),
) -> None:
    """Train a modified Kneser-Ney KenLM model (lmplz) on CCNet-normalised text."""
    from thresher.pipeline.core.files import file_texts
    from thresher.scorers.kenlm_model import train_kenlm

    files = [_fetched(p) for p in corpus]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        _fail(f"corpus file(s) not found: {', '.join(missing)}")
    with _written(output) as local:
        try:
            train_kenlm(file_texts(files, text_column), local, order=order, memory=memory,
                        split_punctuation=split_punctuation)
        except (InputError, ValueError, RuntimeError, FileNotFoundError) as exc:
            _fail(str(exc))
    typer.echo(f"KenLM {order}-gram: {output}.arpa and {output}.bin")


@app.command()
@_explained
def demo(
    output: Path = typer.Option(Path("thresher-demo"), "--output", "-o", help="folder for models, output, shards"),
    executor: Optional[str] = typer.Option(None, help="ray (default) or inline"),
) -> None:
    """The whole mission on the bundled corpus: makes the models it needs (once), runs every stage
    (configs/full.yaml), writes report.html and training shards, and says where each lies."""
    from thresher.pipeline.commands.demo import describe, run_demo

    with _run_errors():
        result = run_demo(output, log=lambda m: typer.echo(m, err=True), executor=executor)
    typer.echo(describe(result))


@app.command()
@_explained
def report(
    output_dir: str = typer.Argument(..., help="the output dir of a finished run (or s3:// gs://)"),
    max_loss: float = typer.Option(MAX_LOSS, help="alarm when a domain loses more than this share of its rows"),
    max_reason_loss: float = typer.Option(MAX_REASON_LOSS,
                                          help="alarm when one reason removes more than this share of a domain"),
) -> None:
    """Write OUTPUT_DIR/report.html: alarms, what each stage and reason removed per domain, example
    documents with the scores that decided, thresholds, clusters, the mixture and plots."""
    import tempfile

    from thresher.pipeline.commands.report import render
    from thresher.pipeline.core import storage

    limits = {"max_loss": max_loss, "max_reason_loss": max_reason_loss}
    if not storage.is_remote(output_dir):
        try:
            typer.echo(str(render(Path(output_dir), **limits)))
        except FileNotFoundError as exc:
            _fail(str(exc))
        _echo_alarms(Path(output_dir), **limits)
        return
    remote = storage.ObjectPath(output_dir)
    with tempfile.TemporaryDirectory(prefix="thresher-report-") as tmp, _run_errors():
        storage.copy_tree(remote, Path(tmp))  # the output as it is now (its manifest says which)
        try:
            page = render(Path(tmp), **limits)
        except FileNotFoundError as exc:
            _fail(str(exc))
        storage.copy_file(page, remote / page.name)
        _echo_alarms(Path(tmp), **limits)
    typer.echo(str(remote / page.name))


@app.command()
@_explained
def ablate(
    pipeline: Path = typer.Argument(..., help="pipeline YAML (its weighted output is the curated arm)"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for both runs, the models' results, ablation.json"),
    baseline: str = typer.Option("raw", help="raw (every input document, equally likely) or another pipeline YAML"),
    tokens: int = typer.Option(200_000, help="training tokens per arm and seed"),
    seeds: int = typer.Option(3, min=1),
    eval_fraction: float = typer.Option(0.05, help="held-out share of the inputs when the YAML has no eval: section"),
    size: str = typer.Option("tiny", help="proxy model size (tiny|small|125m)"),
    seq_len: int = typer.Option(128),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu or cuda"),
    executor: Optional[str] = typer.Option(None, help="executor of the pipeline runs: ray or inline"),
    address: Optional[str] = typer.Option(None, help="run the pipelines on an existing Ray cluster (ray://... or auto)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display for the pipeline runs"),
) -> None:
    """Does curation help? Train the same small proxy LM on the pipeline's weighted output and on
    a baseline at an equal token budget, per seed, and compare held-out loss and bits per byte."""
    from thresher.pipeline.commands.ablation import ablate as run_ablation
    from thresher.pipeline.engine.progress import Progress

    with _run_errors():
        try:
            result = run_ablation(pipeline, output, baseline=baseline, tokens=tokens, seeds=seeds,
                                  eval_fraction=eval_fraction, size=size, seq_len=seq_len, batch_size=batch_size,
                                  device=device, executor=executor, address=address,
                                  progress=Progress(enabled=not quiet),
                                  log=lambda m: typer.echo(m, err=True))
        except ValueError as exc:
            _fail(str(exc))
    typer.echo(f"{output / 'ablation.json'}: {result['statement']}")


@app.command("export")
@_explained
def export_cmd(
    output_dir: str = typer.Argument(..., help="the output dir of a finished run (or s3:// gs://)"),
    tokenizer: str = typer.Option(..., help="Hugging Face tokenizer folder (local or s3:// gs://)"),
    dest: str = typer.Option(..., "--dest", "-d", help="where the training shards go (a path or s3:// gs://)"),
    seq_len: int = typer.Option(1024),
    fmt: str = typer.Option("parquet", "--format", help="parquet (input_ids) or bin (.bin + .idx)"),
) -> None:
    """Tokenize the kept rows and pack them into fixed-length training sequences per group."""
    from thresher.pipeline.commands.export import export
    from thresher.scorers.tokenizer import TokenizerError

    if fmt not in ("parquet", "bin"):
        _fail("--format must be parquet or bin")
    with _written(dest) as local:
        try:
            summary = export(_fetched(output_dir), str(_fetched(tokenizer)), local, seq_len, fmt)
        except (FileNotFoundError, TokenizerError, ValueError) as exc:
            _fail(str(exc))
    empty = "" if summary["groups"] else " (the run kept no rows: nothing to tokenize)"
    typer.echo(f"{summary['tokens']:,} tokens in {len(summary['groups'])} group(s) -> {dest}{empty}")


# --- cluster jobs -------------------------------------------------------------------------

_ADDRESS = typer.Option("http://127.0.0.1:8265", "--address", envvar="RAY_JOB_ADDRESS",
                        help="the cluster's job server (dashboard) address")


def _jobs():
    from thresher.jobs import submit as jobs

    return jobs


def _cluster_fail(exc) -> None:
    """An unknown job is the caller's mistake (2); an unreachable or refusing cluster is 3."""
    _fail(str(exc), code=2 if isinstance(exc, _jobs().JobNotFound) else 3)


@app.command()
@_explained
def submit(
    pipeline: Path = typer.Argument(..., help="pipeline YAML"),
    address: str = _ADDRESS,
    wait: bool = typer.Option(False, "--wait/--no-wait", help="follow the logs until the job ends"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="override output.dir (a path or s3:// gs://)"),
    work_dir: Optional[str] = typer.Option(None, help="override work_dir (a path or s3:// gs://)"),
    python: str = typer.Option("python", help="the cluster's Python that has thresher's dependencies"),
    wheel: Optional[Path] = typer.Option(None, help="a thresher wheel to ship (default: built from this checkout)"),
    ablate: Optional[str] = typer.Option(None, help='run `thresher ablate` on the cluster instead, with these '
                                                    'arguments, e.g. "-o /shared/ablation --tokens 400000 --seeds 3"'),
) -> None:
    """Submit a pipeline as a Ray Job (or, with --ablate, an ablation of it); thresher travels as a
    wheel in the job's runtime_env."""
    import shlex

    from thresher.pipeline.commands.cluster import submit_pipeline

    jobs = _jobs()
    try:
        job_id = submit_pipeline(pipeline, address, python=python, output=output, work_dir=work_dir, wheel=wheel,
                                 ablate=shlex.split(ablate) if ablate is not None else None)
    except ConfigError as exc:
        _fail(str(exc))
    except (jobs.ClusterError, RuntimeError) as exc:
        _fail(str(exc), code=3)
    typer.echo(job_id)
    if wait:
        try:
            final = jobs.wait(address, job_id, echo=lambda m: typer.echo(m, err=True))
            tail = "\n".join(jobs.logs(address, job_id).splitlines()[-30:]) if final != "SUCCEEDED" else ""
        except jobs.ClusterError as exc:
            _cluster_fail(exc)
        if final != "SUCCEEDED":
            _fail(f"job {job_id} {final}; last log lines:\n{tail}", code=1)
        typer.echo(f"job {job_id} SUCCEEDED", err=True)


@app.command()
@_explained
def status(job_id: str, address: str = _ADDRESS) -> None:
    """A job's status and its progress: the running stage, shards done of total, rows/s and ETA
    (exit code 1 when it failed or was stopped)."""
    from thresher.pipeline.engine.progress import last_record

    jobs = _jobs()
    try:
        info = jobs.status(address, job_id)
        info["progress"] = last_record(jobs.logs(address, job_id))
    except jobs.ClusterError as exc:
        _cluster_fail(exc)
    typer.echo(json.dumps(info, indent=2))
    if info["status"] in ("FAILED", "STOPPED"):
        raise typer.Exit(1)


@app.command()
@_explained
def logs(job_id: str, address: str = _ADDRESS, follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """A job's logs (--follow: until it ends)."""
    jobs = _jobs()
    try:
        if follow:
            jobs.wait(address, job_id, echo=typer.echo)
        else:
            typer.echo(jobs.logs(address, job_id), nl=False)
    except jobs.ClusterError as exc:
        _cluster_fail(exc)


@app.command()
@_explained
def stop(job_id: str, address: str = _ADDRESS) -> None:
    """Stop a running job."""
    jobs = _jobs()
    try:
        stopped = jobs.stop(address, job_id)
    except jobs.ClusterError as exc:
        _cluster_fail(exc)
    typer.echo(f"{job_id}: {'stop requested' if stopped else 'not running'}")


@app.command("list")
@_explained
def list_cmd(address: str = _ADDRESS) -> None:
    """Jobs on the cluster."""
    jobs = _jobs()
    try:
        rows = jobs.list_jobs(address)
    except jobs.ClusterError as exc:
        _cluster_fail(exc)
    for r in rows:
        typer.echo(f"{r['job_id']}\t{r['status']}\t{r['name']}")


@app.command()
@_explained
def stages(
    name: Optional[str] = typer.Argument(None, help="one stage (default: every stage, a line each)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable"),
    markdown: bool = typer.Option(False, "--markdown", help="the whole reference as Markdown (docs/STAGES.md)"),
) -> None:
    """The stages a pipeline can use: their columns, drop reasons, parameters and an example."""
    from thresher.pipeline.commands import stage_docs
    from thresher.pipeline.engine import registry

    if name is not None:
        try:
            infos = [stage_docs.describe(registry.get(name))]
        except KeyError as exc:
            _fail(exc.args[0])
    else:
        infos = stage_docs.reference()
    if as_json:
        typer.echo(json.dumps(infos if name is None else infos[0], indent=2))
    elif markdown:
        typer.echo(stage_docs.as_markdown(infos), nl=False)
    elif name is not None:
        typer.echo(stage_docs.as_text(infos[0]))
    else:
        width = max(len(i["name"]) for i in infos)
        for i in infos:
            summary = i["doc"].split("\n\n")[0].replace("\n", " ")
            typer.echo(f"{i['name']:<{width}}  {summary}")
        typer.echo("\n`thresher stages NAME` shows one stage: its columns, parameters and an example.")


def main() -> None:  # python -m thresher.pipeline.commands.cli
    app(prog_name="thresher")


if __name__ == "__main__":
    sys.exit(main())
