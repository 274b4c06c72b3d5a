"""Deterministic samples by id hash: equal to a direct xxhash computation, independent of sharding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

from thresher.scorers.domain_sample import merge_samples, sample_part
from thresher.scorers.sampling import sample_mask


def _corpus(n=500, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"doc-{i}-{rng.integers(1 << 30)}" for i in range(n)]
    groups = [None if i % 50 == 0 else f"g{rng.integers(4)}" for i in range(n)]
    texts = [None if i % 77 == 0 else "ü" * int(rng.integers(1, 20)) for i in range(n)]
    return ids, groups, texts


def test_sample_mask_is_a_seeded_hash_threshold():
    ids, _, _ = _corpus()
    mask = sample_mask(pa.chunked_array([ids[:200], ids[200:]]), 0.3, seed=7)
    expected = [xxhash.xxh64_intdigest(i.encode(), 7) < int(0.3 * 2**64) for i in ids]
    assert mask.tolist() == expected and 0.2 < mask.mean() < 0.4
    assert sample_mask(pa.array(ids), 1.0).all()


def test_sample_part_picks_the_smallest_hashes_per_group_whatever_the_sharding():
    ids, groups, texts = _corpus()
    whole = merge_samples([sample_part(pa.array(groups), pa.array(ids), pa.array(texts), 10)], 10)
    shards = [slice(0, 123), slice(123, 300), slice(300, 500)]
    parts = [sample_part(pa.array(groups[s]), pa.array(ids[s]), pa.array(texts[s]), 10) for s in shards]
    assert merge_samples(parts, 10) == whole
    assert set(whole) == {"", "g0", "g1", "g2", "g3"}  # a null group is the group ""
    for g, got in whole.items():
        rows = [i for i, x in enumerate(groups) if (x or "") == g]
        best = sorted(rows, key=lambda i: xxhash.xxh64_intdigest(ids[i].encode()))[:10]
        assert got["ids"] == [ids[i] for i in best] and got["texts"] == [texts[i] for i in best]
        assert got["rows"] == len(rows)
        assert got["bytes"] == sum(len((texts[i] or "").encode()) for i in rows)
    assert sample_part(pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.string()), 5) == {}
