from __future__ import annotations

import unicodedata

import pyarrow as pa

from conftest import MemoryFit
from thresher.pipeline.engine.runner import apply_stage
from thresher.scorers.hashing import text_hashes
from thresher.stages.exact_dedup import ExactDedup
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
    shards = {"a": pa.table({"id": ["b", "d", "a"], "text": ["Hello  World", "unique", "hello world"],
                             "source": ["f1"] * 3}),
              "b": pa.table({"id": ["a", "c", "e"], "text": ["hello world", "HELLO WORLD ", "only in b"],
                             "source": ["f0"] * 3})}
    state = stage.fit(MemoryFit(shards, tmp_path))
    assert stage.summarize_state(state) == {"texts_kept": 3}
    kept = {s: apply_stage(stage, t, stage.shard_state(state, s), 2) for s, t in shards.items()}
    # id "a" holds "hello world" in both shards: the tie goes to the smaller source, f0 (shard b).
    assert kept["a"][0]["id"].to_pylist() == ["d"] and kept["b"][0]["id"].to_pylist() == ["a", "e"]
    assert sorted(kept["a"][1]["id"].to_pylist() + kept["b"][1]["id"].to_pylist()) == ["a", "b", "c"]
    assert set(kept["a"][1]["drop_reason"].to_pylist()) == {"exact_duplicate"}
    assert "_row" not in kept["a"][0].column_names
    # Each shard stores only its own winners (their positions).
    assert stage.shard_state(state, "a")[0].tolist() == [1] and stage.shard_state(state, "b")[0].tolist() == [0, 2]
    h = text_hashes(pa.array(["x y", "X  Y", "x z"]))
    assert h[0] == h[1] != h[2]


def test_exact_dedup_total_order_among_rows_sharing_an_id(tmp_path):
    """The same (id, text) twice in one shard, in batches of one row, and in two shards of one source:
    exactly one row survives, the first by (id, source, position)."""
    stage = ExactDedup()
    shards = {"s0": pa.table({"id": ["x", "x", "y"], "text": ["same"] * 3, "source": ["f"] * 3}),
              "s1": pa.table({"id": ["x"], "text": ["same"], "source": ["f"]})}
    state = stage.fit(MemoryFit(shards, tmp_path))
    out = {s: apply_stage(stage, t, stage.shard_state(state, s), 1) for s, t in shards.items()}
    assert out["s0"][0].num_rows == 1 and out["s1"][0].num_rows == 0
    assert stage.shard_state(state, "s0")[0].tolist() == [0]
    unseen = pa.table({"id": ["z"], "text": ["never seen"], "source": ["f"]})
    assert apply_stage(stage, unseen, stage.shard_state(state, "nope"), 10)[0].num_rows == 0


def test_exact_dedup_against_an_earlier_runs_index(tmp_path):
    """Run 1 writes its distinct text hashes as an index; run 2 (another corpus) names it in
    `against`: its rows whose normalised text run 1 held go with reason duplicate_of_earlier, the
    rest are deduplicated among themselves as usual; a folder that is no index is refused."""
    import pytest

    from thresher.pipeline.core.files import InputError

    first = ExactDedup(ExactDedup.Params(index=str(tmp_path / "idx")))
    old = {"a": pa.table({"id": ["a1", "a2"], "text": ["old news", "Other text"], "source": ["f"] * 2})}
    first.fit(MemoryFit(old, tmp_path / "r1"))
    assert (tmp_path / "idx" / "index.json").exists()
    second = ExactDedup(ExactDedup.Params(against=[str(tmp_path / "idx")]))
    new = {"b": pa.table({"id": ["b1", "b2", "b3", "b4"], "text": ["OLD  news", "fresh", "fresh", "other text"],
                          "source": ["g"] * 4})}
    state = second.fit(MemoryFit(new, tmp_path / "r2"))
    kept, rejected = apply_stage(second, new["b"], second.shard_state(state, "b"), 3)
    assert kept["id"].to_pylist() == ["b2"]
    assert dict(zip(rejected["id"].to_pylist(), rejected["drop_reason"].to_pylist())) == {
        "b1": "duplicate_of_earlier", "b3": "exact_duplicate", "b4": "duplicate_of_earlier"}
    assert second.summarize_state(state) == {"texts_kept": 3, "rows_in_earlier_runs": 2}
    with pytest.raises(InputError, match="not a dedup index"):
        ExactDedup(ExactDedup.Params(against=[str(tmp_path)])).fit(MemoryFit(new, tmp_path / "r3"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")  # an index never overwrites other files
    with pytest.raises(InputError, match="holds files but no dedup index"):
        ExactDedup(ExactDedup.Params(index=str(tmp_path / "mine"))).fit(MemoryFit(new, tmp_path / "r4"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first.fit(MemoryFit(old, tmp_path / "r5"))  # an index is rewritten in place


def test_lookup_maps_each_row_through_a_dict():
    from thresher.pipeline.core.stage import lookup

    col = pa.chunked_array([["a", "b", "a"], ["c", None, "b"]])
    assert lookup(col, {"a": 1.0, "b": 2.0}, default=-1.0).tolist() == [1.0, 2.0, 1.0, -1.0, -1.0, 2.0]
    assert lookup(pa.array([], pa.string()), {"a": 1.0}).tolist() == []
