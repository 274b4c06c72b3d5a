"""Parquet inputs read in place: the same rows, ids, rejections and output as a copied input, no
text in the work dir, and an input changed after ingest reported by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_pipeline
from thresher.pipeline.engine.checkpoint import materialize
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.in_place import InputChangedError
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.pipeline.engine.workdir import StageDir

WORDS = "river stone light harbour window garden letter morning silver quiet".split()


def _texts(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    texts = [" ".join(WORDS[k] for k in rng.integers(0, len(WORDS), int(rng.integers(3, 30)))) for _ in range(n)]
    for i in range(0, n, 97):
        texts[i] = None  # rejected: null_text
    for i in range(5, n, 131):
        texts[i] = texts[i - 5]  # exact copies for exact_dedup
    return texts


def _with_invalid_utf8(texts: list, at: list[int]) -> pa.Array:
    """A string column holding invalid UTF-8 at `at` (Arrow does not check Parquet strings on read)."""
    raw = [None if t is None else (b"caf\xe9 " + t.encode() if i in at else t.encode()) for i, t in enumerate(texts)]
    return pa.array(raw, pa.binary()).view(pa.string())


def _run(tmp_path, name: str, path, in_place: bool, **fields):
    stages = [{"stage": "length_filter", "min_words": 5}, {"stage": "exact_dedup"}]
    cfg = write_pipeline(tmp_path / f"{name}.yaml", inputs=[{"paths": [str(path)], "in_place": in_place}],
                         stages=stages, work_dir=f"work-{name}", output={"dir": f"out-{name}"}, **fields)
    return Runner(load_config(cfg), executor=InlineExecutor(), progress=Progress(False)).run()


def _ingest_parts(work) -> list:
    return sorted(next(work.glob("ingest-*")).glob("rows/part-*.parquet"))


def test_a_parquet_input_read_in_place_gives_the_copy_s_rows(tmp_path):
    n = 1_230
    texts = _texts(n)
    text = _with_invalid_utf8(texts, at=[10, 600])
    pq.write_table(pa.table({"text": text, "n": np.arange(n)}), tmp_path / "in.parquet", row_group_size=100)

    placed = _run(tmp_path, "placed", tmp_path / "in.parquet", True)
    copied = _run(tmp_path, "copied", tmp_path / "in.parquet", False)

    parts = _ingest_parts(tmp_path / "work-placed")
    assert len(parts) == 3  # runs of row groups of at most shard_rows (500) rows: 500, 500, 230
    assert all("text" not in pq.read_schema(p).names for p in parts)
    assert all("text" in pq.read_schema(p).names for p in _ingest_parts(tmp_path / "work-copied"))
    ingest_bytes = [sum(p.stat().st_size for p in _ingest_parts(tmp_path / f"work-{n}")) for n in ("placed", "copied")]
    assert ingest_bytes[0] < ingest_bytes[1]

    a = pq.read_table(placed.output_dir / "data")
    b = pq.read_table(copied.output_dir / "data")
    assert a.num_rows > 1_000 and a.equals(b)  # ids (hashes of source and row number) included
    assert placed.manifest["stages"][0]["rejected"] == {"null_text": texts.count(None), "invalid_utf8": 2}
    assert [s["rejected"] for s in placed.manifest["stages"]] == [s["rejected"] for s in copied.manifest["stages"]]
    rejected = pq.read_table(placed.output_dir / "rejected").sort_by("id")
    assert rejected.equals(pq.read_table(copied.output_dir / "rejected").sort_by("id"))


def test_row_groups_larger_than_a_shard_and_non_string_text_are_copied(tmp_path):
    texts = [t for t in _texts(800) if t is not None]
    pq.write_table(pa.table({"text": texts}), tmp_path / "big.parquet", row_group_size=800)  # > a shard's 200 rows
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), tmp_path / "large.parquet",
                   row_group_size=200)
    pq.write_table(pa.table({"text": pa.array([t.encode() for t in texts])}), tmp_path / "binary.parquet",
                   row_group_size=200)
    for name, placed in (("big", False), ("large", True), ("binary", False)):  # each can fill a 200-row shard
        res = _run(tmp_path, name, tmp_path / f"{name}.parquet", True, shard_rows=200)
        assert all(("text" not in pq.read_schema(p).names) == placed for p in _ingest_parts(tmp_path / f"work-{name}"))
        assert pq.read_table(res.output_dir / "data")["text"].type == pa.string()
    texts_out = {n: sorted(pq.read_table(tmp_path / f"out-{n}" / "data")["text"].to_pylist())
                 for n in ("big", "large", "binary")}
    assert texts_out["large"] == texts_out["big"] == texts_out["binary"]


def test_an_input_changed_after_ingest_is_an_error_that_names_it(tmp_path):
    path = tmp_path / "in.parquet"
    texts = [t for t in _texts(300) if t is not None]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=100)
    _run(tmp_path, "a", path, True, shard_rows=300)  # one shard, and a file that can fill it: read in place
    ingest = next((tmp_path / "work-a").glob("ingest-*"))
    chain = [StageDir(tmp_path / "work-a", 0, "ingest", ingest.name.split("-", 1)[1])]
    assert materialize(chain, "00000-00000")["text"].to_pylist() == texts

    pq.write_table(pa.table({"text": texts[::-1]}), path, row_group_size=100)  # same rows, reordered
    with pytest.raises(InputChangedError, match=f"{path}: the input changed"):
        materialize(chain, "00000-00000")
    assert materialize(chain, "00000-00000", columns=["id"]).num_rows == len(texts)  # no text asked: not read
    path.unlink()
    with pytest.raises(InputChangedError, match="removed"):
        materialize(chain, "00000-00000")
