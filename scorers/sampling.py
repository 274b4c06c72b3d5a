"""Deterministic sampling by id: the same documents are picked on every run and machine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.scorers.hashing import string_hashes


def sample_mask(ids: pa.Array | pa.ChunkedArray, fraction: float, seed: int = 0) -> np.ndarray:
    """True for the ids whose seeded 64-bit hash falls in the lowest `fraction` of the range."""
    limit = min(int(fraction * 2**64), 2**64 - 1)
    return string_hashes(ids, seed) < np.uint64(limit) if fraction < 1 else np.ones(len(ids), dtype=bool)
