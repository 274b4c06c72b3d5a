"""Bad input: a clear error naming the file, or rows rejected with a reason, never a silent loss."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_pipeline
from thresher.pipeline.core.files import InputError
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.errors import TaskFailed
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner

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


def _invalid_utf8_strings(values: list[bytes]) -> pa.Array:
    """A string-typed Arrow array holding raw bytes as given (Arrow does not validate on build)."""
    data = b"".join(values)
    offsets = pa.py_buffer(np.cumsum([0] + [len(v) for v in values]).astype(np.int32).tobytes())
    return pa.Array.from_buffers(pa.string(), len(values), [None, offsets, pa.py_buffer(data)])


def test_lone_surrogates_are_rejected_not_fatal_in_every_field(tmp_path):
    lines = [json.dumps({"text": PROSE, "doc_id": "a"}),
             '{"text": "a \\ud800 b", "doc_id": "b"}',
             '{"text": "fine text here", "doc_id": "c \\udfff"}',
             json.dumps({"text": PROSE + " too", "doc_id": "d"})]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    res = _run(tmp_path, [{"paths": ["s.jsonl"], "id_column": "doc_id"}])
    assert res.manifest["stages"][0]["rejected"] == {"invalid_utf8": 2}
    assert sorted(pq.read_table(res.output_dir / "data")["id"].to_pylist()) == ["a", "d"]
    assert _rejected(res.output_dir).num_rows == 2


def test_bom_then_a_bad_line_keeps_the_first_document(tmp_path):
    body = json.dumps({"text": PROSE}).encode() + b"\n" + json.dumps({"text": "second"}).encode() + b"\n{bad\n"
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + body)
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + body))
    res = _run(tmp_path, [{"paths": ["*.jsonl*"]}])
    assert res.manifest["stages"][0]["rejected"] == {"invalid_json": 2}
    assert sorted(pq.read_table(res.output_dir / "data")["text"].to_pylist()) == sorted([PROSE, "second"] * 2)


def test_invalid_utf8_in_string_columns_of_parquet_and_hf_disk(tmp_path):
    text = _invalid_utf8_strings([b"good one", b"bad \xed\xa0\x80 surrogate", b"good two", b"fine"])
    ids = _invalid_utf8_strings([b"i1", b"i2", b"i3", b"\xff"])
    table = pa.table({"text": text, "key": ids})
    pq.write_table(table, tmp_path / "s.parquet")
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    res = _run(tmp_path, [{"paths": ["s.parquet", "s.arrow"], "id_column": "key"}])
    assert res.manifest["stages"][0]["rejected"] == {"invalid_utf8": 4}
    assert sorted(pq.read_table(res.output_dir / "data")["text"].to_pylist()) == ["good one", "good one",
                                                                               "good two", "good two"]


def test_clean_jsonl_readers_skip_a_bom_and_name_the_line_of_a_surrogate(tmp_path):
    from thresher.pipeline.core.files import json_records

    good = tmp_path / "g.jsonl"
    good.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "x", "label": 1}).encode() + b"\n")
    assert [r for _, r in json_records(good)] == [{"text": "x", "label": 1}]
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"text": "x"}) + '\n{"text": "y \\ud800"}\n')
    with pytest.raises(InputError, match=r"b\.jsonl:2: not a JSON object of valid Unicode"):
        list(json_records(bad))


def test_a_row_whose_text_is_not_a_string_keeps_its_id_and_domain(tmp_path):
    """Rejected as non_string_text, with the domain and id of its line: no domain `default` appears
    (which the report would count as a domain that lost every row)."""
    lines = [{"id": f"d{i}", "text": PROSE, "domain": "web"} for i in range(3)] + [{"id": "n1", "text": 42,
                                                                                  "domain": "web"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = _run(tmp_path, [{"paths": ["a.jsonl"], "id_column": "id", "domain_column": "domain"}])
    rej = _rejected(res.output_dir)
    assert rej.to_pylist()[0] | {"drop_detail": None} == {
        "id": "n1", "text": "42", "source": "a.jsonl", "domain": "web", "drop_stage": "ingest",
        "drop_reason": "non_string_text", "drop_detail": None}
    from thresher.pipeline.commands.domain_losses import alarms, domain_losses

    losses = domain_losses(res.output_dir, with_bytes=False)
    assert [r["domain"] for r in losses] == ["web"] and not alarms(losses)
