"""A deterministic sample of documents per group (the smallest id hashes), as map-reduce parts.

Used wherever a stage needs a fixed set of pages per domain or topic: the result does not depend
on how the corpus is sharded or in which order shards finish.
"""

from __future__ import annotations

import numpy as np
import xxhash


def sample_part(groups: list[str], ids: list[str], texts: list[str], per_group: int) -> dict:
    """Per group: (rows, bytes, [(hash, id, text)] of the per_group smallest id hashes)."""
    h = np.fromiter((xxhash.xxh64_intdigest(i.encode()) for i in ids), dtype=np.uint64, count=len(ids))
    out: dict[str, list] = {}
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        best = sorted(idx, key=lambda i: h[i])[:per_group]
        nbytes = sum(len((texts[i] or "").encode()) for i in idx)
        out[g] = [len(idx), nbytes, [(int(h[i]), ids[i], texts[i]) for i in best]]
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
