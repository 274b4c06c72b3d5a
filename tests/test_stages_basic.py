from __future__ import annotations

import unicodedata

import pyarrow as pa

from thresher.pipeline.runner import apply_stage
from thresher.stages.exact_dedup import ExactDedup, text_hashes
from thresher.stages.length_filter import LengthFilter
from thresher.stages.normalize import Normalize, normalize_text


def test_normalize_nfc_and_whitespace():
    decomposed = unicodedata.normalize("NFD", "café")
    out = normalize_text(pa.array([f"  {decomposed}\t\tau   lait \r\n\r\n\r\n\n next line  ", None]))
    assert out.to_pylist() == ["café au lait\n\nnext line", None]
    assert out[0].as_py() == unicodedata.normalize("NFC", out[0].as_py())
    t = Normalize().transform(pa.table({"id": ["a"], "text": ["x  y"]}))
    assert t.column_names == ["id", "text"] and t["text"].to_pylist() == ["x y"]


def test_length_filter_reasons():
    stage = LengthFilter(LengthFilter.Params(min_words=3, max_chars=20))
    table = pa.table({"text": ["one two", "one two three", "one two three four five six seven"]})
    kept, rejected = apply_stage(stage, table, None, batch_rows=2)
    assert kept["text"].to_pylist() == ["one two three"]
    assert kept["n_words"].to_pylist() == [3]
    assert rejected["drop_reason"].to_pylist() == ["too_short", "too_long"]


def test_exact_dedup_map_reduce_across_shards():
    stage = ExactDedup()
    shard_a = pa.table({"id": ["b", "d"], "text": ["Hello  World", "unique"]})
    shard_b = pa.table({"id": ["a", "c"], "text": ["hello world", "HELLO WORLD "]})
    state = stage.merge([stage.partial(shard_a), stage.partial(shard_b)])
    assert state.num_rows == 2
    kept_a, rej_a = apply_stage(stage, shard_a, state, 10)
    kept_b, rej_b = apply_stage(stage, shard_b, state, 10)
    assert kept_a["id"].to_pylist() == ["d"] and kept_b["id"].to_pylist() == ["a"]
    assert sorted(rej_a["id"].to_pylist() + rej_b["id"].to_pylist()) == ["b", "c"]
    assert set(rej_a["drop_reason"].to_pylist() + rej_b["drop_reason"].to_pylist()) == {"exact_duplicate"}
    h = text_hashes(pa.array(["x y", "X  Y", "x z"]))
    assert h[0] == h[1] != h[2]
    # A repeated id keeps one copy; a text the state has never seen is not kept by accident.
    twice = pa.table({"id": ["a", "a"], "text": ["hello world", "hello world"]})
    kept, rejected = apply_stage(stage, twice, state, 10)
    assert kept.num_rows == 1 and rejected["drop_reason"].to_pylist() == ["exact_duplicate"]
    assert apply_stage(stage, pa.table({"id": ["z"], "text": ["never seen"]}), stage.merge([]), 10)[0].num_rows == 0


def test_lookup_maps_each_row_through_a_dict():
    from thresher.pipeline.output import lookup

    col = pa.chunked_array([["a", "b", "a"], ["c", None, "b"]])
    assert lookup(col, {"a": 1.0, "b": 2.0}, default=-1.0).tolist() == [1.0, 2.0, 1.0, -1.0, -1.0, 2.0]
    assert lookup(pa.array([], pa.string()), {"a": 1.0}).tolist() == []
