import numpy as np
import pyarrow as pa
import pytest
import xxhash
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from thresher.scorers.minhash import connected_components, optimal_bands, shingles, signatures

TEXTS = [
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.",
    "Short one.",
    "",
    "Beautiful is better than ugly. Explicit is better than implicit; simple is better than complex!",
]


@pytest.mark.parametrize("scheme", ["legacy", "affine64"])
@pytest.mark.parametrize("seed", [1, 42])
def test_signatures_equal_datasketch(scheme, seed):
    sig, counts = signatures(pa.array(TEXTS), num_perm=64, seed=seed, ngram=5, scheme=scheme)
    for i, text in enumerate(TEXTS):
        m = MinHash(num_perm=64, seed=seed, hashfunc=xxhash.xxh64_intdigest, scheme=scheme)
        sh = shingles(text)
        if sh:
            m.update_batch(sh)
        assert counts[i] == len(sh)
        np.testing.assert_array_equal(sig[i], m.hashvalues.astype(np.uint64))


def test_optimal_bands_equal_datasketch():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        assert optimal_bands(threshold, 128) == _optimal_param(threshold, 128, 0.5, 0.5)


def test_connected_components_label_with_smallest_member():
    u = np.array([5, 1, 7, 3])
    v = np.array([1, 2, 8, 7])
    labels = connected_components(u, v, 10)
    assert labels.tolist() == [0, 1, 1, 3, 4, 1, 6, 3, 3, 9]
    rng = np.random.default_rng(0)
    n = 2000
    u, v = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    labels = connected_components(u, v, n)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as ref

    _, ref_labels = ref(coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n)), directed=False)
    # same partition
    assert len(set(zip(labels.tolist(), ref_labels.tolist()))) == len(set(labels.tolist())) == len(set(ref_labels.tolist()))
    assert all(labels[i] <= i for i in range(n))


def test_shingle_hash_sets_give_exact_jaccard():
    from thresher.scorers.minhash import exact_jaccard, shingle_hash_sets
    from thresher.scorers.minhash_eval import jaccard

    a, b = TEXTS[0], TEXTS[0].replace("void", "empty")
    sa, sb = shingle_hash_sets(pa.array([a, b]))
    assert len(sa) == len(shingles(a))
    assert exact_jaccard(sa, sb) == pytest.approx(jaccard(a, b))
