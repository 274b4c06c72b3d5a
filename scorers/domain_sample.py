"""A deterministic sample of documents per group (the smallest id hashes), as map-reduce parts.

Used wherever a stage needs a fixed set of pages per domain or topic: the result does not depend
on how the corpus is sharded or in which order shards finish.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.scorers.hashing import filled_array, string_hashes


def sample_part(groups: pa.Array | pa.ChunkedArray, ids: pa.Array | pa.ChunkedArray,
                texts: pa.Array | pa.ChunkedArray, per_group: int) -> dict:
    """Per group: (rows, bytes, [(hash, id, text)] of the per_group smallest id hashes). Only the
    picked rows become Python objects."""
    if len(ids) == 0:
        return {}
    h = string_hashes(ids)
    enc = pc.dictionary_encode(filled_array(groups))
    codes = enc.indices.to_numpy()
    names = enc.dictionary.to_pylist()
    nbytes = pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False)
    order = np.lexsort((h, codes))  # by group, then by hash; stable, so ties keep row order
    sizes = np.bincount(codes, minlength=len(names))
    group_bytes = np.bincount(codes, weights=nbytes, minlength=len(names))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out: dict[str, list] = {}
    for k in sorted(range(len(names)), key=names.__getitem__):
        if sizes[k] == 0:
            continue
        best = order[starts[k]:starts[k] + min(per_group, sizes[k])]
        take = pa.array(best)
        picks = list(zip(h[best].tolist(), ids.take(take).to_pylist(), texts.take(take).to_pylist()))
        out[names[k]] = [int(sizes[k]), int(group_bytes[k]), picks]
    return out


def merge_samples(parts: list[dict], per_group: int) -> dict[str, dict]:
    """group -> {"rows", "bytes", "ids", "texts"} with the per_group smallest hashes overall."""
    acc: dict[str, dict] = {}
    for part in parts:
        for g, (rows, nbytes, picks) in part.items():
            a = acc.setdefault(g, {"rows": 0, "bytes": 0, "picks": []})
            a["rows"] += rows
            a["bytes"] += nbytes
            a["picks"].extend(picks)
    out = {}
    for g in sorted(acc):
        picks = sorted(acc[g]["picks"])[:per_group]
        out[g] = {"rows": acc[g]["rows"], "bytes": acc[g]["bytes"], "ids": [p[1] for p in picks],
                  "texts": [p[2] for p in picks]}
    return out
