import numpy as np
import pyarrow as pa
import pytest
import xxhash
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from thresher.scorers.minhash import optimal_bands, shingles, signatures

TEXTS = [
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "Short one.",
    "",
    "Beautiful is better than ugly. Explicit is better than implicit; simple is better than complex!",
]


@pytest.mark.parametrize("scheme", ["affine32", "legacy", "affine64"])
@pytest.mark.parametrize("seed", [1, 42])
def test_signatures_equal_datasketch(scheme, seed):
    sig, counts = signatures(pa.array(TEXTS), num_perm=64, seed=seed, ngram=5, scheme=scheme)
    hashfunc = xxhash.xxh32_intdigest if scheme == "affine32" else xxhash.xxh64_intdigest
    for i, text in enumerate(TEXTS):
        m = MinHash(num_perm=64, seed=seed, hashfunc=hashfunc, scheme=scheme)
        sh = shingles(text)
        if sh:
            m.update_batch(sh)
        assert counts[i] == len(sh)
        np.testing.assert_array_equal(sig[i], m.hashvalues.astype(np.uint64))


def test_optimal_bands_equal_datasketch():
    """Our exact quadrature picks the (bands, rows) datasketch's scipy.quad search picks."""
    for num_perm in (16, 128, 256):
        for threshold in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
            for fp_weight in (0.5, 0.2, 0.9):
                assert optimal_bands(threshold, num_perm, fp_weight, 1 - fp_weight) == \
                    _optimal_param(threshold, num_perm, fp_weight, 1 - fp_weight), (num_perm, threshold, fp_weight)


def _components(u, v, tmp_path, partitions=4):
    import pyarrow.parquet as pq

    from thresher.pipeline.toolkit.components import connected_components

    files = []
    for k, chunk in enumerate(np.array_split(np.arange(len(u)), 3)):  # edges spread over files
        files.append(tmp_path / f"e{k}.parquet")
        pq.write_table(pa.table({"u": np.asarray(u)[chunk], "v": np.asarray(v)[chunk]}), files[-1])
    final = connected_components(map, files, tmp_path / "cc", partitions)
    t = pa.concat_tables(list(final.all(partitions)))
    return dict(zip(t["node"].to_pylist(), t["label"].to_pylist()))


def test_partitioned_components_label_with_smallest_member(tmp_path):
    labels = _components(np.array([5, 1, 7, 3, 40]), np.array([1, 2, 8, 7, 41]), tmp_path)
    assert labels == {1: 1, 2: 1, 5: 1, 3: 3, 7: 3, 8: 3, 40: 40, 41: 40}


def test_partitioned_components_equal_scipy_on_a_random_graph(tmp_path):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as ref

    rng = np.random.default_rng(0)
    n = 3000
    u, v = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    labels = _components(u, v, tmp_path, partitions=7)
    _, ref_labels = ref(coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n)), directed=False)
    nodes = sorted(labels)
    assert nodes == sorted(set(u.tolist()) | set(v.tolist()))
    ours = [labels[x] for x in nodes]
    theirs = [ref_labels[x] for x in nodes]
    assert len(set(zip(ours, theirs))) == len(set(ours)) == len(set(theirs))  # the same partition
    for x in nodes:
        assert labels[x] == min(y for y in nodes if labels[y] == labels[x])  # the smallest member


def test_shingle_sets_give_exact_jaccard():
    from thresher.scorers.minhash import pair_jaccard, shingle_sets
    from thresher.scorers.minhash_eval import jaccard

    docs = [TEXTS[0], TEXTS[0].replace("void", "empty"), TEXTS[1], "", "a a a a a a a a", "",
            "a a a a a a", "a a a a a b a a a a a", TEXTS[0] + " " + TEXTS[0]]
    values, offsets = shingle_sets(pa.array(docs))
    assert offsets[1] == len(shingles(docs[0]))
    a, b = np.array([0, 0, 1, 3, 4, 4, 7, 0]), np.array([1, 2, 2, 5, 6, 7, 4, 8])
    got = pair_jaccard(values, offsets, a, b)
    pairs = [(i, j) for i, j in zip(a, b) if i != 3]
    assert got[[k for k in range(len(a)) if a[k] != 3]] == pytest.approx([jaccard(docs[i], docs[j]) for i, j in pairs])
    assert got[3] == 1.0  # two empty documents
    assert got[4] == 1.0 and got[5] == pytest.approx(1 / 6) == got[6]  # repeated shingles count once


def test_signature_agreement_is_the_share_of_equal_positions():
    from thresher.scorers.minhash import signature_agreement

    rng = np.random.default_rng(0)
    sig = rng.integers(0, 4, (50, 128)).astype(np.uint64)  # few values: agreements of every size
    a, b = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    assert np.allclose(signature_agreement(sig, a, b), (sig[a] == sig[b]).mean(axis=1))
    assert signature_agreement(sig, np.array([3]), np.array([3]))[0] == 1.0
