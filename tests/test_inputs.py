"""Bad input: a clear error naming the file, or rows rejected with a reason, never a silent loss."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_pipeline
from thresher.pipeline.config import load_config
from thresher.pipeline.executor import InlineExecutor, TaskFailed
from thresher.pipeline.io import InputError
from thresher.pipeline.progress import Progress
from thresher.pipeline.runner import Runner

PROSE = "the quick brown fox jumps over the lazy dog and keeps running far away"


def _run(tmp_path, inputs, stages=()):
    p = write_pipeline(tmp_path / "p.yaml", inputs=inputs, stages=list(stages))
    return Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()


def _rejected(out) -> pa.Table:
    return pq.read_table(out / "rejected") if (out / "rejected").exists() else None


def test_bad_rows_are_rejected_with_reasons_and_counted(tmp_path):
    lines = [
        json.dumps({"text": PROSE}).encode(),
        json.dumps({"text": None}).encode(),
        json.dumps({"text": 42}).encode(),
        b'{"text": "caf\xe9 broken utf-8"}',
        b'{"text": "unterminated',
        json.dumps([1, 2]).encode(),
        json.dumps({"other": "no text key"}).encode(),
        json.dumps({"text": PROSE + " again"}).encode(),
    ]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = _run(tmp_path, [{"paths": ["a.jsonl"]}])
    ingest = res.manifest["stages"][0]
    assert ingest["rows_in"] == 8 and ingest["rows_out"] == 2
    assert ingest["rejected"] == {"invalid_json": 2, "invalid_utf8": 1, "non_string_text": 1, "null_text": 2}
    rej = _rejected(res.output_dir)
    assert rej.num_rows == 6
    assert set(rej["drop_stage"].to_pylist()) == {"ingest"}
    assert set(rej["source"].to_pylist()) == {"a.jsonl"}
    out = pq.read_table(res.output_dir / "data")
    assert sorted(out["text"].to_pylist()) == sorted([PROSE, PROSE + " again"])


def test_null_and_non_string_text_in_parquet(tmp_path):
    pq.write_table(pa.table({"text": [PROSE, None, "ok " * 5]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    res = _run(tmp_path, [{"paths": ["*.parquet"]}])
    assert res.manifest["totals"]["rejected"] == {"ingest:non_string_text": 2, "ingest:null_text": 1}
    assert res.manifest["output"]["rows"] == 2


def test_invalid_utf8_in_a_binary_parquet_column(tmp_path):
    pq.write_table(pa.table({"text": pa.array([b"fine text", b"bad \xff\xfe bytes"], pa.binary())}),
                   tmp_path / "b.parquet")
    res = _run(tmp_path, [{"paths": ["b.parquet"]}])
    assert res.manifest["stages"][0]["rejected"] == {"invalid_utf8": 1}
    assert _rejected(res.output_dir)["text"].to_pylist() == ["bad \ufffd\ufffd bytes"]


def test_missing_text_column_names_file_and_fix(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "s.parquet")
    with pytest.raises(TaskFailed) as info:
        _run(tmp_path, [{"paths": ["s.parquet"]}])
    msg = str(info.value)
    assert "s.parquet" in msg and "no column 'text'" in msg and "text_column" in msg and "body" in msg


def test_corrupt_parquet_names_file(tmp_path):
    pq.write_table(pa.table({"text": [PROSE] * 100}), tmp_path / "s.parquet")
    data = (tmp_path / "s.parquet").read_bytes()
    (tmp_path / "s.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskFailed) as info:
        _run(tmp_path, [{"paths": ["s.parquet"]}])
    assert info.value.kind == "InputError"
    assert "s.parquet" in str(info.value) and "corrupt" in str(info.value)


def test_truncated_gzip_names_file(tmp_path):
    blob = gzip.compress(("\n".join(json.dumps({"text": PROSE + str(i)}) for i in range(2000))).encode())
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TaskFailed) as info:
        _run(tmp_path, [{"paths": ["t.jsonl.gz"]}])
    assert info.value.kind == "InputError" and "t.jsonl.gz" in str(info.value)


def test_empty_glob_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"inputs\[0\]\.paths: 'nothing/\*\.parquet' matched no files"):
        _run(tmp_path, [{"paths": ["nothing/*.parquet"]}])


def test_datasets_save_to_disk_input_with_ids_and_domains(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"content": [PROSE, "second doc here", "third"], "key": ["a", "b", "c"],
                                     "url": ["https://ex.org/1", "http://docs.test/x", None]})
    ds.save_to_disk(str(tmp_path / "hf"))
    res = _run(tmp_path, [{"paths": ["hf"], "text_column": "content", "id_column": "key",
                           "url_column": "url", "domain": "unknown"}])
    out = pq.read_table(res.output_dir / "data").sort_by("id")
    assert out["id"].to_pylist() == ["a", "b", "c"]
    assert out["domain"].to_pylist() == ["ex.org", "docs.test", "unknown"]
    assert out["group"].to_pylist() == out["domain"].to_pylist()


def test_ids_are_stable_hashes_of_source_and_offset(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(3)))
    first = pq.read_table(_run(tmp_path, [{"paths": ["a.jsonl"]}]).output_dir / "data")["id"].to_pylist()
    second = pq.read_table(_run(tmp_path, [{"paths": ["a.jsonl"]}]).output_dir / "data")["id"].to_pylist()
    assert first == second and len(set(first)) == 3
