"""Many small input files: ingest reads them together into shards of about `shard_rows` rows (never
a shard per file), and global passes size their partitions by rows, never by the shard count."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import demo_texts, write_pipeline
from thresher.pipeline.engine import ingest
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.ingest import IngestTask, InputFile
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner
from thresher.pipeline.engine.workdir import StageDir
from thresher.pipeline.toolkit.key_groups import partitions_for

STAGES = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 3}, {"stage": "exact_dedup"},
          {"stage": "minhash_dedup"}, {"stage": "softdedup"}]


def _run(tmp_path, name, paths, **fields):
    p = write_pipeline(tmp_path / f"{name}.yaml", inputs=[{"paths": paths}], stages=STAGES, work_dir=f"w-{name}",
                       output={"dir": f"o-{name}"}, **fields)
    return Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()


def test_one_line_files_make_full_shards_and_the_rows_of_one_file(tmp_path):
    texts = demo_texts("scripture", 300)
    (tmp_path / "many").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "many" / f"{i:04d}.jsonl").write_text(json.dumps({"text": t}) + "\n")
    (tmp_path / "one.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    many = _run(tmp_path, "many", ["many/*.jsonl"], shard_rows=50)
    one = _run(tmp_path, "one", ["one.jsonl"], shard_rows=50)
    assert [s["shards"] for s in many.manifest["stages"]] == [1] + [6] * 5  # one task, six shards of 50 rows
    parts = sorted(many.stage_dirs["00-ingest"].out.glob("part-*.parquet"))
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [50] * 6
    assert [s["rows_out"] for s in many.manifest["stages"]] == [s["rows_out"] for s in one.manifest["stages"]]
    a, b = (pq.read_table(r.output_dir / "data") for r in (many, one))
    assert sorted(a["text"].to_pylist()) == sorted(b["text"].to_pylist())
    weights = lambda t: sorted(zip(t["text"].to_pylist(), t["softdedup_weight"].to_pylist()))  # noqa: E731
    assert weights(a) == weights(b)  # the same corpus-wide counts, whatever the files


def test_ingest_groups_consecutive_files_by_bytes_and_count(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "GROUP_BYTES", 1_000)
    monkeypatch.setattr(ingest, "GROUP_FILES", 3)
    task = IngestTask(load_config(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}])).inputs, 50,
                      StageDir(tmp_path, 0, "ingest", "0" * 16))
    sizes = [100, 100, 100, 100, 950, 2_000, 10, 10]  # the fifth cannot join the fourth: 100 + 950 > 1,000
    files = [InputFile(i, f"/d/{i}.jsonl", f"{i}.jsonl", "jsonl", 0, n, 0) for i, n in enumerate(sizes)]
    groups = [[f.index for f in g] for _, g in task.plan(files)]
    assert groups == [[0, 1, 2], [3], [4], [5], [6, 7]]  # at most 3 files; a file of GROUP_BYTES or more alone


def test_a_small_parquet_file_is_copied_and_shares_shards(tmp_path):
    """A Parquet file that cannot fill a shard is not read in place (that would make a shard of it)."""
    for i in range(4):
        texts = [f"a short document, number {10 * i + k}, of a few words" for k in range(10)]
        pq.write_table(pa.table({"text": texts}), tmp_path / f"p{i}.parquet")
    res = _run(tmp_path, "pq", ["p*.parquet"], shard_rows=200)
    parts = sorted(res.stage_dirs["00-ingest"].out.glob("part-*.parquet"))
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [40]
    assert "text" in pq.read_schema(parts[0]).names  # a copy


def test_partitions_follow_rows_not_shards():
    assert partitions_for(0, 20_000, 1, 64) == 1
    assert partitions_for(5_000, 20_000, 1, 64) == 1  # 5,000 one-line files: one partition, not 5,000
    assert partitions_for(130_000, 20_000, 1, 64) == 7
    assert partitions_for(10**9, 10_000, 16, 4096) == 4096  # never above the pass's own maximum
