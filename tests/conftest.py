from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml

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
