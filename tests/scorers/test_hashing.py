import numba
import numpy as np
import pyarrow as pa
import pytest
import xxhash

from thresher.scorers.hashing import (
    XXH32_PAIR_READS_PAST,
    XXH64_PAIR_READS_PAST,
    normalize_for_hashing,
    string_buffers,
    word_spans,
    xxh32,
    xxh32_pair,
    xxh64,
    xxh64_pair,
)


def test_xxh64_matches_the_reference_for_every_length_class():
    rng = np.random.default_rng(0)
    for n in list(range(0, 70)) + [100, 257, 1024]:
        data = rng.integers(0, 256, n + 7, dtype=np.uint8)
        for seed in (0, 1, 2**63 + 5):
            assert int(xxh64(data, 3, 3 + n, np.uint64(seed))) == xxhash.xxh64_intdigest(data[3:3 + n].tobytes(), seed)


def test_xxh32_matches_the_reference_for_every_length_class():
    rng = np.random.default_rng(1)
    for n in list(range(0, 70)) + [100, 257, 1024]:
        data = rng.integers(0, 256, n + 7, dtype=np.uint8)
        for seed in (0, 1, 2**32 - 3):
            assert int(xxh32(data, 3, 3 + n, np.uint64(seed))) == xxhash.xxh32_intdigest(data[3:3 + n].tobytes(), seed)


@numba.njit
def _pair32(data, a0, b0, a1, b1, seed):
    return xxh32_pair(data, a0, b0, a1, b1, seed)


@numba.njit
def _pair64(data, a0, b0, a1, b1, seed):
    return xxh64_pair(data, a0, b0, a1, b1, seed)


@pytest.mark.parametrize("pair, reference, past_end", [(_pair32, xxhash.xxh32_intdigest, XXH32_PAIR_READS_PAST),
                                                      (_pair64, xxhash.xxh64_intdigest, XXH64_PAIR_READS_PAST)])
def test_paired_xxh_matches_the_reference_for_every_pair_of_length_classes(pair, reference, past_end):
    """Each of the two may have any tail (every count of word, half-word and byte steps after its
    stripes), whatever the other's; the bytes past the longer end that it reads are garbage it
    must ignore."""
    rng = np.random.default_rng(2)
    lengths = list(range(0, 72)) + [100, 129]
    data = rng.integers(0, 256, 3 + max(lengths) + past_end, dtype=np.uint8)
    for n0 in lengths:
        for n1 in lengths:
            for seed in (0, 2**32 - 3):
                h0, h1 = pair(data, 3, 3 + n0, 1, 1 + n1, np.uint64(seed))
                assert (int(h0), int(h1)) == (reference(data[3:3 + n0].tobytes(), seed),
                                              reference(data[1:1 + n1].tobytes(), seed))


def test_xxh64_refuses_a_strided_view():
    """It reads words by unaligned loads: bytes that are not adjacent in memory must not compile."""
    data = np.arange(64, dtype=np.uint8)
    with pytest.raises(numba.core.errors.TypingError):
        xxh64(data[::2], 0, 16, np.uint64(0))


def test_normalized_words():
    text = normalize_for_hashing(pa.array(["Hello,  World! Ça   va?", None, "   ", "one"]))
    assert text.to_pylist() == ["hello world ça va", "", "", "one"]
    data, offsets = string_buffers(text)
    starts, ends, doc_words = word_spans(data, offsets)
    words = [data[s:e].tobytes().decode() for s, e in zip(starts, ends)]
    assert words == ["hello", "world", "ça", "va", "one"]
    assert doc_words.tolist() == [0, 4, 4, 4, 5]
    edges = ["\t--A--\n b\u00a0c\u2014d  ", "...", "x\u2003\u2003y.", "a\u00e9\tB", "\r\n1,000!"]
    assert normalize_for_hashing(pa.array(edges)).to_pylist() == ["a b cd", "", "x y", "aé b", "1000"]


def test_lowercasing_only_the_non_ascii_documents_equals_lowercasing_all():
    """The kernel lowercases ASCII documents itself and reads the others from utf8_lower's output,
    whose length can differ (İ, ẞ): the result equals normalising the all-lowercased text, for
    any mix and order of the two, with nulls, and for chunked or sliced input."""
    import pyarrow.compute as pc

    rows = ["İSTANBUL, ẞtraße!", "Plain ASCII, Words.", None, "ΣΑΣ and ǅ", "", "UPPER lower 123",
            "İİ x", "Ça va? — «OUI» …", "ＡＢＣ　Def", "LAST ONE"]
    text = pa.array(rows)
    want = normalize_for_hashing(pc.utf8_lower(text)).to_pylist()
    assert normalize_for_hashing(text).to_pylist() == want
    assert want == ["istanbul ßtraße", "plain ascii words", "", "σασ and ǆ", "", "upper lower 123", "ii x",
                    "ça va «oui»", "ａｂｃ\u3000def", "last one"]
    chunked = pa.chunked_array([text[1:4], text[4:]])
    assert normalize_for_hashing(chunked).to_pylist() == want[1:]
    assert normalize_for_hashing(text[3:8]).to_pylist() == want[3:8]


def test_string_hashes_and_row_ids_equal_xxhash_per_value():
    from thresher.pipeline.engine.ingest import _stable_ids
    from thresher.scorers.hashing import find_sorted, string_hashes

    values = ["", "a", "ünïcödé", None, "x" * 100]
    chunked = pa.chunked_array([values[:2], values[2:]])
    assert string_hashes(chunked, 9).tolist() == [xxhash.xxh64_intdigest((v or "").encode(), 9) for v in values]
    offsets = np.array([0, 7, 2**40])
    assert _stable_ids("data/ü.jsonl", offsets).to_pylist() == [
        xxhash.xxh64_hexdigest(f"data/ü.jsonl\x00{o}".encode()) for o in offsets.tolist()]
    pos, found = find_sorted(np.array([3, 5, 9], np.uint64), np.array([5, 4, 9, 10], np.uint64))
    assert found.tolist() == [True, False, True, False] and pos[found].tolist() == [1, 2]
    assert not find_sorted(np.zeros(0, np.uint64), np.array([1], np.uint64))[1].any()


def test_kernels_are_cached_per_version_of_every_scorer(tmp_path, monkeypatch):
    """numba checks only a kernel's own file: after hashing.py changes, minhash's cached kernels
    (which inline its XXH64) must not be reused, so the cache folder is named by all the sources."""
    import os
    from pathlib import Path

    from thresher.pipeline.core.cache import numba_cache_dir, scorer_sources

    src = tmp_path / "scorers"
    src.mkdir()
    (src / "hashing.py").write_text("A = 1\n")
    (src / "minhash.py").write_text("B = 1\n")
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    before = numba_cache_dir(src)
    (src / "hashing.py").write_text("A = 2\n")
    after = numba_cache_dir(src)
    assert before != after and Path(after).parent == tmp_path / "cache" / "numba"
    assert numba_cache_dir(src) == after  # stable while nothing changes
    # this process (conftest called use_numba_cache, as every entry point does): numba caches
    # Thresher's kernels in the folder of the current sources
    assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
    monkeypatch.delenv("THRESHER_CACHE")
    if os.environ["NUMBA_CACHE_DIR"] == numba_cache_dir(scorer_sources()):
        xxh64(np.arange(40, dtype=np.uint8), 0, 40, np.uint64(0))
        assert list(Path(os.environ["NUMBA_CACHE_DIR"]).rglob("hashing.xxh64-*.nbi"))
