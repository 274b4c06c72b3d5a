from __future__ import annotations

import unicodedata

import pyarrow as pa

from conftest import MemoryFit
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


def test_exact_dedup_keeps_one_copy_across_shards(tmp_path):
    stage = ExactDedup()
    shards = {"a": pa.table({"id": ["b", "d", "a"], "text": ["Hello  World", "unique", "hello world"]}),
              "b": pa.table({"id": ["a", "c", "e"], "text": ["hello world", "HELLO WORLD ", "only in b"]})}
    state = stage.fit(MemoryFit(shards, tmp_path))
    assert stage.summarize_state(state) == {"texts_kept": 4}  # "a" wins in both shards: its id repeats
    kept = {s: apply_stage(stage, t, stage.shard_state(state, s), 10) for s, t in shards.items()}
    assert kept["a"][0]["id"].to_pylist() == ["d", "a"] and kept["b"][0]["id"].to_pylist() == ["a", "e"]
    assert sorted(kept["a"][1]["id"].to_pylist() + kept["b"][1]["id"].to_pylist()) == ["b", "c"]
    assert set(kept["a"][1]["drop_reason"].to_pylist()) == {"exact_duplicate"}
    # Each shard stores only its own winners.
    assert sorted(stage.shard_state(state, "a")["id"].to_pylist()) == ["a", "d"]
    h = text_hashes(pa.array(["x y", "X  Y", "x z"]))
    assert h[0] == h[1] != h[2]
    # A repeated id keeps one copy; a text the state has never seen is not kept by accident.
    twice = pa.table({"id": ["a", "a"], "text": ["hello world", "hello world"]})
    kept_twice, rejected = apply_stage(stage, twice, stage.shard_state(state, "a"), 10)
    assert kept_twice.num_rows == 1 and rejected["drop_reason"].to_pylist() == ["exact_duplicate"]
    unseen = pa.table({"id": ["z"], "text": ["never seen"]})
    assert apply_stage(stage, unseen, stage.shard_state(state, "nope"), 10)[0].num_rows == 0


def test_lookup_maps_each_row_through_a_dict():
    from thresher.pipeline.output import lookup

    col = pa.chunked_array([["a", "b", "a"], ["c", None, "b"]])
    assert lookup(col, {"a": 1.0, "b": 2.0}, default=-1.0).tolist() == [1.0, 2.0, 1.0, -1.0, -1.0, 2.0]
    assert lookup(pa.array([], pa.string()), {"a": 1.0}).tolist() == []
