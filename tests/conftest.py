from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import traceback
from pathlib import Path

import pytest
import yaml

from thresher.pipeline.core.cache import use_numba_cache

use_numba_cache()  # as every Thresher entry point does, before a kernel compiles

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
DEMO_DATA = REPO / "tests" / "data" / "demo"


def demo_texts(name: str, n: int | None = None, min_words: int = 0) -> list[str]:
    """Texts of one bundled demo file (scripture, python_docs, fortunes, mirror), in file order."""
    with gzip.open(DEMO_DATA / f"{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
        out = [json.loads(line)["text"] for line in fh]
    out = [t for t in out if len(t.split()) >= min_words]
    return out[:n] if n else out


def reference_module(relative: str):
    """The authors' code that `make setup` fetched into .venv/references (tools/fetch_references.sh)."""
    import importlib.util

    path = REPO / ".venv" / "references" / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (tools/fetch_references.sh fetches it)")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def thresher(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`thresher ARGS` run in this process (typer's CliRunner), answered as a subprocess would be:
    returncode, stdout and stderr (with the traceback of an unexpected error). A separate process is
    worth its start-up (imports, numba, a Ray of its own) only where the process is what a test is
    about: a crash, a kill, a lock held by another process."""
    from typer.testing import CliRunner

    from thresher.pipeline.commands.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "".join(traceback.format_exception(res.exception))
    return subprocess.CompletedProcess(["thresher", *map(str, args)], res.exit_code, res.stdout, stderr)


def write_pipeline(path: Path, **fields) -> Path:
    """A pipeline YAML at `path` with defaults suited to tests (inline executor, small shards)."""
    cfg = {"name": "test", "seed": 0, "executor": "inline", "shard_rows": 500,
           "output": {"dir": "out"}, "work_dir": "work", "stages": []}
    cfg.update(fields)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class MemoryFit:
    """A FitContext over in-memory shards, run in this process: a global pass without the runner."""

    def __init__(self, shards: dict, folder: Path):
        self.tables, self.shards = shards, list(shards)
        self.rows = sum(t.num_rows for t in shards.values())
        self.scratch, self.state_dir = folder / "scratch", folder / "state"
        self.scratch.mkdir(parents=True, exist_ok=True)  # as the runner's context does

    def reader(self):
        return lambda shard, columns=None: self.tables[shard].select(columns or self.tables[shard].column_names)

    def map(self, fn, items):
        return map(fn, items)


@pytest.fixture
def demo_subset(tmp_path) -> Path:
    """A copy of two demo files (scripture + mirror) in tmp_path/data."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("scripture.jsonl.gz", "mirror.jsonl.gz", "python_docs.jsonl.gz"):
        shutil.copy(DEMO_DATA / name, data / name)
    return data


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray costs seconds."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    if started:
        ray.shutdown()


# --- models shared by the whole session (each trained once, by the code users run) ---------

@pytest.fixture(scope="session")
def harmful_kenlm(tmp_path_factory):
    """A KenLM 3-gram trained by `thresher train-kenlm` (in process) on 6,000 synthetic harmful
    sentences (tests/harmful_data.py), with the labelled validation and test sets drawn beside it."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from harmful_data import labelled_sets
    from thresher.pipeline.commands.cli import app

    train, validation, test = labelled_sets()
    out = tmp_path_factory.mktemp("harm")
    corpus = out / "harmful.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
    res = CliRunner().invoke(app, ["train-kenlm", str(corpus), "-o", str(out / "harm"), "--order", "3"])
    assert res.exit_code == 0, res.output[-2000:]
    return SimpleNamespace(binary=out / "harm.bin", arpa=out / "harm.arpa", train=train, validation=validation,
                           test=test)


@pytest.fixture(scope="session")
def stage_models(tmp_path_factory, harmful_kenlm):
    """The smallest real models every stage's example needs, named as the examples (and `thresher
    demo`) name them: models/ref and models/ref2 (reference LMs of 6 and 2 training steps),
    models/harm.bin, models/bpb.parquet (their bits per byte) and models/benchmark.csv."""
    import csv

    from thresher.pipeline.core.files import write_parquet
    from thresher.scorers.bpb_matrix import bpb_matrix
    from thresher.scorers.reference_lm import train_reference

    d = tmp_path_factory.mktemp("models")
    texts = demo_texts("scripture", 60) + demo_texts("python_docs", 60)
    for name, steps in (("ref2", 2), ("ref", 6)):
        train_reference(texts, d / name, vocab_size=300, steps=steps, seq_len=32, batch_size=4, log=None, seed=steps)
    shutil.copy(harmful_kenlm.binary, d / "harm.bin")
    write_parquet(bpb_matrix([d / "ref2", d / "ref"], {"scripture": texts[:5], "python-docs": texts[60:65]}, 32),
                  d / "bpb.parquet")
    with open(d / "benchmark.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["model", "error"], ["ref2", 0.8], ["ref", 0.6]])
    return d
