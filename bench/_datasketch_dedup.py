"""Run by bench/minhash.py as its own process: datasketch's fastest whole near-dedup path.

    python _datasketch_dedup.py IN.parquet OUT.parquet THRESHOLD NUM_PERM NGRAM -> prints {"seconds": ...}

Reads the corpus, shingles each document (lowercased, punctuation removed, 5-word shingles, as
Thresher does), builds every signature with `MinHash.bulk` (xxh32 with the affine32 scheme: twice
as fast as xxh64 with the legacy scheme in bench/results/minhash.json), inserts them into `MinHashLSH` in one insertion session, queries each document,
joins the candidates with union-find and writes every row with its cluster (the smallest row index
in it), as Thresher's `policy: reweight` does. No exact verification (datasketch has none), so
this path does less work than Thresher's.
"""

import json
import re
import sys
import time

t_start = time.perf_counter()

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import xxhash  # noqa: E402
from datasketch import MinHash, MinHashLSH  # noqa: E402

src, dst, threshold, num_perm, ngram = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
PUNCT = re.compile(r"[^\w\s]")


def shingles(text: str) -> list[bytes]:
    words = PUNCT.sub("", text.lower()).split()
    if len(words) < ngram:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)]


table = pq.read_table(src, columns=["id", "text"])
texts = table["text"].to_pylist()
sigs = MinHash.bulk([shingles(t) for t in texts], num_perm=num_perm, hashfunc=xxhash.xxh32_intdigest,
                     scheme="affine32")
lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
with lsh.insertion_session() as session:
    for i, m in enumerate(sigs):
        session.insert(i, m)
parent = list(range(len(texts)))


def find(x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


for i, m in enumerate(sigs):
    for j in lsh.query(m):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
roots = [find(i) for i in range(len(texts))]
pq.write_table(table.append_column("cluster", pa.array(roots)), dst)
print(json.dumps({"seconds": time.perf_counter() - t_start, "docs": len(texts), "clusters": len(set(roots)),
                  "bands": lsh.b, "rows": lsh.r}))
