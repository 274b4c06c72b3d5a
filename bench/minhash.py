"""MinHash benchmark: signatures + LSH, docs/s on one core, ours vs datasketch vs datatrove.

    .venv/bin/python bench/minhash.py [--docs 5000] [--datatrove-python PATH] [--million]

Same corpus (real text from the demo set cut into ~2 KB documents), num_perm=128, 5-word
shingles, shingling included for every contender. Writes bench/results/minhash.json.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chunk_docs, demo_texts, machine, write_result  # noqa: E402

NUM_PERM, NGRAM, THRESHOLD = 128, 5, 0.8


def _py_shingles(text: str) -> list[bytes]:
    words = re.sub(r"[^\w\s]", "", text.lower()).split()
    if len(words) < NGRAM:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + NGRAM]).encode() for i in range(len(words) - NGRAM + 1)]


def bench_ours(docs: list[str]) -> dict:
    from thresher.scorers.minhash import band_hashes, candidate_pairs, optimal_bands, signatures

    pa.set_cpu_count(1)
    bands, rows = optimal_bands(THRESHOLD, NUM_PERM)
    arr = pa.array(docs)
    band_hashes(signatures(arr[:20], NUM_PERM)[0], bands, rows)  # compile outside the timing
    t0 = time.perf_counter()
    sig, _ = signatures(arr, NUM_PERM, seed=1, ngram=NGRAM)
    t_sig = time.perf_counter() - t0
    bh = band_hashes(sig.astype(np.uint32).astype(np.uint64), bands, rows)
    n = len(docs)
    u, v = candidate_pairs(np.tile(np.arange(bands, dtype=np.uint16), n), bh.reshape(-1),
                           np.repeat(np.arange(n, dtype=np.int64), bands))
    t_all = time.perf_counter() - t0
    return {"docs_per_s": n / t_all, "signature_docs_per_s": n / t_sig, "candidate_pairs": int(len(u)),
            "bands": bands, "rows": rows}


def bench_datasketch_update(docs: list[str]) -> dict:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    t0 = time.perf_counter()
    for i, d in enumerate(docs):
        m = MinHash(num_perm=NUM_PERM)
        for sh in _py_shingles(d):
            m.update(sh)
        lsh.insert(str(i), m)
    return {"docs_per_s": len(docs) / (time.perf_counter() - t0), "docs": len(docs),
            "how": "MinHash() default (sha1, affine32), update per shingle, MinHashLSH.insert"}


def bench_datasketch_bulk(docs: list[str]) -> dict:
    """datasketch's fastest path: MinHash.bulk with xxhash, for each scheme; the faster one counts."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    runs = {}
    for scheme, hashfunc in (("legacy", xxhash.xxh64_intdigest), ("affine32", xxhash.xxh32_intdigest)):
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        t0 = time.perf_counter()
        mhs = MinHash.bulk([_py_shingles(d) for d in docs], num_perm=NUM_PERM, hashfunc=hashfunc, scheme=scheme)
        t_sig = time.perf_counter() - t0
        with lsh.insertion_session() as session:
            for i, m in enumerate(mhs):
                session.insert(str(i), m)
        runs[scheme] = {"docs_per_s": len(docs) / (time.perf_counter() - t0),
                        "signature_docs_per_s": len(docs) / t_sig}
    best = max(runs, key=lambda k: runs[k]["docs_per_s"])
    return {**runs[best], "scheme": best, "per_scheme": runs,
            "how": "MinHash.bulk(hashfunc=xxhash) incl. shingling, MinHashLSH insertion_session"}


def bench_datatrove(docs: list[str], python: str | None) -> dict:
    if not python:
        return {"skipped": "no --datatrove-python given: datatrove pins its own dependency set, so it runs "
                           "from a separate venv (see bench/README.md)"}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "docs.json").write_text(json.dumps(docs))
        proc = subprocess.run([python, str(Path(__file__).parent / "_datatrove_signatures.py"),
                               f"{tmp}/docs.json", f"{tmp}/sigs", str(NUM_PERM), str(NGRAM)],
                              capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if proc.returncode:
            return {"skipped": f"datatrove run failed: {proc.stderr.strip()[-500:]}"}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["how"] = "MinhashDedupSignature.run (16 buckets x 8 hashes, xxhash 64, writes bucketed signatures)"
    return res


def bench_quality() -> dict:
    """Precision/recall against exact Jaccard on planted near-duplicates of real text (pipeline run)."""
    from thresher.pipeline.config import parse_config
    from thresher.pipeline.executor import InlineExecutor
    from thresher.pipeline.progress import Progress
    from thresher.pipeline.runner import Runner
    from thresher.scorers.minhash_eval import pairwise_quality, plant_near_duplicates
    import pyarrow.parquet as pq

    texts = [" ".join(t.split()[:300]) for t in demo_texts(("scripture", "python_docs")) if len(t.split()) >= 80]
    rows = plant_near_duplicates(texts[:2000], seed=11, max_rate=0.06)
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}), f"{tmp}/docs.parquet")
        cfg = parse_config({"inputs": [{"paths": [f"{tmp}/docs.parquet"], "id_column": "id"}],
                            "stages": [{"stage": "minhash_dedup", "policy": "reweight", "threshold": THRESHOLD}],
                            "executor": "inline", "shard_rows": 1000}, base_dir=Path(tmp))
        res = Runner(cfg, executor=InlineExecutor(), progress=Progress(False), output_dir=f"{tmp}/out").run()
        out = pq.read_table(res.output_dir / "data")
    return pairwise_quality(dict(rows), dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist())), THRESHOLD)


def million(n: int) -> dict:
    """Peak memory of the minhash_dedup stage (pipeline, one process) on n short documents."""
    import random

    from thresher.pipeline.config import parse_config
    from thresher.pipeline.progress import Progress
    from thresher.pipeline.runner import Runner
    import pyarrow.parquet as pq

    rng = random.Random(0)
    base = [t for t in demo_texts(("scripture", "fortunes")) if 60 < len(t) < 2000]
    sentences = [s.strip() for t in base for s in re.split(r"(?<=[.;:?!])\s+", t) if len(s.split()) >= 6]
    with tempfile.TemporaryDirectory() as tmp:
        for part in range(10):  # short documents: two or three real sentences each
            texts = [" ".join(rng.sample(sentences, rng.randint(2, 3))) for _ in range(n // 10)]
            pq.write_table(pa.table({"text": texts}), f"{tmp}/in-{part}.parquet")
        cfg = parse_config({"inputs": [{"paths": [f"{tmp}/in-*.parquet"]}],
                            "stages": [{"stage": "minhash_dedup"}], "executor": "inline",
                            "shard_rows": 50_000}, base_dir=Path(tmp))
        t0 = time.perf_counter()
        res = Runner(cfg, progress=Progress(False), output_dir=f"{tmp}/out").run()
        dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"docs": n, "seconds": dt, "peak_rss_mb": peak_mb,
            "near_duplicates": res.manifest["stages"][-1]["rejected"].get("near_duplicate", 0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--update-docs", type=int, default=500, help="docs for the slow per-shingle datasketch path")
    ap.add_argument("--datatrove-python", default=None)
    ap.add_argument("--million", type=int, default=0, help="also measure peak memory on this many short docs")
    ap.add_argument("--_million_child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._million_child:
        print(json.dumps(million(args._million_child)))
        return
    docs = chunk_docs(demo_texts(), size=2048, count=args.docs)
    contenders = {
        "ours": bench_ours(docs),
        "datasketch_update": bench_datasketch_update(docs[: args.update_docs]),
        "datasketch_bulk_xxhash": bench_datasketch_bulk(docs),
        "datatrove": bench_datatrove(docs, args.datatrove_python),
    }
    ours = contenders["ours"]["docs_per_s"]
    result = {
        "machine": machine(),
        "inputs": {"docs": len(docs), "bytes": sum(len(d.encode()) for d in docs), "num_perm": NUM_PERM,
                   "ngram": NGRAM, "threshold": THRESHOLD, "cores_used": 1},
        "docs_per_s": {k: v.get("docs_per_s") for k, v in contenders.items()},
        "contenders": contenders,
        "speedup_vs_datasketch_update": ours / contenders["datasketch_update"]["docs_per_s"],
        "speedup_vs_datasketch_bulk": ours / contenders["datasketch_bulk_xxhash"]["docs_per_s"],
        "speedup_vs_datatrove": (ours / contenders["datatrove"]["docs_per_s"]
                                 if contenders["datatrove"].get("docs_per_s") else None),
        "quality": bench_quality(),
    }
    if args.million:
        proc = subprocess.run([sys.executable, __file__, "--_million_child", str(args.million)],
                              capture_output=True, text=True)
        result["million"] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
            "failed": proc.stderr[-800:]}
        result["peak_rss_mb"] = result["million"].get("peak_rss_mb")
    path = write_result("minhash.json", result)
    for k, v in result["docs_per_s"].items():
        print(f"{k:<24} {v:>10,.0f} docs/s" if v else f"{k:<24} {'skipped':>10}")
    print(f"speedup vs datasketch update: {result['speedup_vs_datasketch_update']:.1f}x, "
          f"vs bulk+xxhash: {result['speedup_vs_datasketch_bulk']:.1f}x, vs datatrove: "
          + (f"{result['speedup_vs_datatrove']:.1f}x" if result["speedup_vs_datatrove"] else "n/a"))
    print(f"quality: precision {result['quality']['precision']:.3f}, recall(J>=0.9) "
          f"{result['quality']['recall_strong']:.3f}")
    if "million" in result:
        print(f"million: {result['million']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
