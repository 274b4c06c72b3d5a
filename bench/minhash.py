"""MinHash benchmark: signatures + LSH, docs/s on one core, ours vs datasketch vs datatrove; and
the whole minhash_dedup stage against datasketch's whole near-dedup path.

    .venv/bin/python bench/minhash.py [--docs 5000] [--datatrove-python PATH] [--million N] [--stage-mb 140]

Signatures: the same corpus (real text from the demo set cut into ~2 KB documents), num_perm=128,
5-word shingles, shingling included for every contender. Whole stage: a sparse corpus (4% of
documents in near-duplicate clusters) and a duplicate-heavy one (60%), both `--stage-mb` MB of new
documents drawn from the demo sources' sentences, clusters of 2-10 made by word edits; each side
timed as a whole process on one core, both with datasketch's affine32 scheme (xxh32). Writes bench/results/minhash.json.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
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
REPEATS = 3  # the in-process signature runs take the best of this many (each under a few seconds)


def _py_shingles(text: str) -> list[bytes]:
    words = re.sub(r"[^\w\s]", "", text.lower()).split()
    if len(words) < NGRAM:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i:i + NGRAM]).encode() for i in range(len(words) - NGRAM + 1)]


def bench_ours(docs: list[str]) -> dict:
    """Signatures + band hashes + candidate pairs, per scheme; the headline is affine32, the
    scheme of datasketch's fastest path."""
    from thresher.scorers.minhash import band_hashes, candidate_pairs, optimal_bands, signatures

    pa.set_cpu_count(1)
    bands, rows = optimal_bands(THRESHOLD, NUM_PERM)
    arr = pa.array(docs)
    n, runs = len(docs), {}
    for scheme in ("legacy", "affine32"):
        band_hashes(signatures(arr[:20], NUM_PERM, scheme=scheme)[0], bands, rows)  # compile outside the timing
        best = None
        for _ in range(REPEATS):  # a fraction of a second each: the best of a few, as for datasketch
            t0 = time.perf_counter()
            sig, _ = signatures(arr, NUM_PERM, seed=1, ngram=NGRAM, scheme=scheme)
            t_sig = time.perf_counter() - t0
            bh = band_hashes(sig.astype(np.uint32).astype(np.uint64), bands, rows)
            u, v = candidate_pairs(bh.reshape(-1), np.repeat(np.arange(n, dtype=np.int64), bands))
            t_all = time.perf_counter() - t0
            best = min(best or (t_all, t_sig, len(u)), (t_all, t_sig, len(u)))
        runs[scheme] = {"docs_per_s": n / best[0], "signature_docs_per_s": n / best[1], "candidate_pairs": best[2]}
    return {**runs["affine32"], "scheme": "affine32", "per_scheme": runs, "bands": bands, "rows": rows,
            "best_of": REPEATS}


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
        for _ in range(REPEATS):
            lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
            t0 = time.perf_counter()
            mhs = MinHash.bulk([_py_shingles(d) for d in docs], num_perm=NUM_PERM, hashfunc=hashfunc, scheme=scheme)
            t_sig = time.perf_counter() - t0
            with lsh.insertion_session() as session:
                for i, m in enumerate(mhs):
                    session.insert(str(i), m)
            run = {"docs_per_s": len(docs) / (time.perf_counter() - t0), "signature_docs_per_s": len(docs) / t_sig}
            if scheme not in runs or run["docs_per_s"] > runs[scheme]["docs_per_s"]:
                runs[scheme] = run
    best = max(runs, key=lambda k: runs[k]["docs_per_s"])
    return {**runs[best], "scheme": best, "per_scheme": runs, "best_of": REPEATS,
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
    import pyarrow.parquet as pq

    from thresher.pipeline.engine.config import parse_config
    from thresher.pipeline.engine.executor import InlineExecutor
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner
    from thresher.scorers.minhash_eval import pairwise_quality, plant_near_duplicates, planted_pairs

    texts = [" ".join(t.split()[:300]) for t in demo_texts(("scripture", "python_docs")) if len(t.split()) >= 80]
    rows = plant_near_duplicates(texts[:2000], seed=11, max_rate=0.06)
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}), f"{tmp}/docs.parquet")
        cfg = parse_config({"inputs": [{"paths": [f"{tmp}/docs.parquet"], "id_column": "id"}],
                            "stages": [{"stage": "minhash_dedup", "policy": "reweight", "threshold": THRESHOLD}],
                            "executor": "inline", "shard_rows": 1000}, base_dir=Path(tmp))
        res = Runner(cfg, executor=InlineExecutor(), progress=Progress(False), output_dir=f"{tmp}/out").run()
        out = pq.read_table(res.output_dir / "data")
    return pairwise_quality(dict(rows), dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist())),
                            planted_pairs(dict(rows)), THRESHOLD)


# --- the whole stage against datasketch's whole path, on a sparse and a duplicate-heavy corpus ---

def near_dup_corpus(megabytes: float, cluster_share: float, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """(ids, texts, planted cluster of each doc): new documents drawn from the bundled sources'
    sentences, planted in clusters of 2-10 (plant_clusters: word edits, rate up to 3%)."""
    import random

    from common import SOURCES, sentence_pools
    from thresher.scorers.minhash_eval import plant_clusters

    rng, pools = random.Random(seed), sentence_pools()
    bases, size = [], 0
    edits_per_base = 5 * cluster_share / (6.0 - 5.0 * cluster_share)  # plant_clusters' mean
    while size < megabytes * 2**20 / (1 + edits_per_base):  # the clusters' edits make up the rest
        pool = pools[SOURCES[rng.randrange(len(SOURCES))]]
        bases.append(" ".join(rng.choice(pool) for _ in range(rng.randint(4, 24))))
        size += len(bases[-1].encode())
    rows = plant_clusters(bases, cluster_share, seed)
    return [f"d{i:08d}" for i in range(len(rows))], [t for t, _ in rows], [c for _, c in rows]


def _timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0, proc


def bench_stage(name: str, megabytes: float, cluster_share: float, tmp: Path) -> dict:
    """`thresher run` of a pipeline holding only minhash_dedup (one process, one core) against
    bench/_datasketch_dedup.py, each timed as a whole process, on the same Parquet file, the best
    of REPEATS runs each; then the pairwise quality of Thresher's clusters against exact shingle
    Jaccard."""
    import os

    import pyarrow.parquet as pq
    import yaml

    from thresher.scorers.minhash_eval import pairwise_quality

    ids, texts, planted = near_dup_corpus(megabytes, cluster_share)
    src = tmp / f"{name}.parquet"
    # 1,000 rows per row group, as `datasets.Dataset.to_parquet` writes them: Thresher reads it in place
    pq.write_table(pa.table({"id": ids, "text": texts}), src, row_group_size=1_000)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}  # one core each
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": f"minhash-{name}", "executor": "inline", "work_dir": str(tmp / f"{name}-work"),
        "inputs": [{"paths": [str(src)], "id_column": "id"}],
        "stages": [{"stage": "minhash_dedup", "threshold": THRESHOLD, "policy": "reweight",
                    "scheme": "affine32"}],  # datasketch's path below uses affine32 (xxh32) too
        "output": {"dir": str(tmp / f"{name}-out")}}))
    root = Path(__file__).resolve().parents[1]
    ours_runs, ds_runs = [], []
    for _ in range(REPEATS):  # alternating, so that a slow spell of the machine hits both sides
        for folder in (tmp / f"{name}-work", tmp / f"{name}-out"):
            shutil.rmtree(folder, ignore_errors=True)  # from scratch: nothing reused
        ours_runs.append(_timed([str(root / ".venv" / "bin" / "thresher"), "run", "-q", str(cfg)], env)[0])
        ds_s, proc = _timed([sys.executable, str(Path(__file__).parent / "_datasketch_dedup.py"), str(src),
                             str(tmp / f"{name}-datasketch.parquet"), str(THRESHOLD), str(NUM_PERM), str(NGRAM)], env)
        ds_runs.append(ds_s)
    ours_s, ds_s = min(ours_runs), min(ds_runs)
    ds = json.loads(proc.stdout.strip().splitlines()[-1])
    out = pq.read_table(tmp / f"{name}-out" / "data", columns=["id", "dup_cluster"])
    clusters = dict(zip(out["id"].to_pylist(), out["dup_cluster"].to_pylist()))
    return {"documents": len(ids), "megabytes": round(sum(len(t.encode()) for t in texts) / 2**20, 1),
            "in_clusters": round(float(np.mean(np.bincount(planted)[planted] > 1)), 3),
            "ours_seconds": round(ours_s, 2), "datasketch_seconds": round(ds_s, 2), "best_of": REPEATS,
            "ours_runs": [round(x, 2) for x in ours_runs], "datasketch_runs": [round(x, 2) for x in ds_runs],
            "speedup_vs_datasketch": round(ds_s / ours_s, 2), "datasketch": ds,
            "quality": pairwise_quality(dict(zip(ids, texts)), clusters, planted_clusters(ids, planted), THRESHOLD)}


def planted_clusters(ids: list[str], planted: list[int]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for i, c in zip(ids, planted):
        groups.setdefault(c, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def million(n: int) -> dict:
    """Peak memory of the minhash_dedup stage (pipeline, one process) on n short documents."""
    import random

    import pyarrow.parquet as pq

    from thresher.pipeline.engine.config import parse_config
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

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
    ap.add_argument("--stage-mb", type=float, default=140.0,
                    help="size of the sparse and the duplicate-heavy corpus for the whole-stage runs (0: skip)")
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
    if args.stage_mb:
        with tempfile.TemporaryDirectory() as tmp:
            result["whole_stage"] = {name: bench_stage(name, args.stage_mb, share, Path(tmp))
                                     for name, share in (("sparse", 0.04), ("dup_heavy", 0.6))}
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
    for name, r in result.get("whole_stage", {}).items():
        q = r["quality"]
        print(f"whole stage, {name} ({r['megabytes']} MB, {r['in_clusters']:.0%} of docs in clusters): ours "
              f"{r['ours_seconds']} s, datasketch {r['datasketch_seconds']} s: {r['speedup_vs_datasketch']}x; "
              f"recall(J>=0.9) {q['recall_strong']:.4f}, lowest merged J {q['min_merged_jaccard']:.4f}")
    if "million" in result:
        print(f"million: {result['million']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
