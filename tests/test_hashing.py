import numpy as np
import pyarrow as pa
import xxhash

from thresher.scorers.hashing import normalize_for_hashing, string_buffers, word_spans, xxh64


def test_xxh64_matches_the_reference_for_every_length_class():
    rng = np.random.default_rng(0)
    for n in list(range(0, 70)) + [100, 257, 1024]:
        data = rng.integers(0, 256, n + 7, dtype=np.uint8)
        for seed in (0, 1, 2**63 + 5):
            assert int(xxh64(data, 3, 3 + n, np.uint64(seed))) == xxhash.xxh64_intdigest(data[3:3 + n].tobytes(), seed)


def test_normalized_words():
    text = normalize_for_hashing(pa.array(["Hello,  World! Ça   va?", None, "   ", "one"]))
    assert text.to_pylist() == ["hello world ça va", "", "", "one"]
    data, offsets = string_buffers(text)
    starts, ends, doc_words = word_spans(data, offsets)
    words = [data[s:e].tobytes().decode() for s, e in zip(starts, ends)]
    assert words == ["hello", "world", "ça", "va", "one"]
    assert doc_words.tolist() == [0, 4, 4, 4, 5]
