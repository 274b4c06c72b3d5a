"""Deterministic sampling by id: the same documents are picked on every run and machine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash


def sample_mask(ids: pa.Array | pa.ChunkedArray, fraction: float, seed: int = 0) -> np.ndarray:
    """True for the ids whose seeded 64-bit hash falls in the lowest `fraction` of the range."""
    limit = int(fraction * 2**64)
    return np.fromiter((xxhash.xxh64_intdigest(i.encode(), seed) < limit for i in ids.to_pylist()),
                       dtype=bool, count=len(ids))
