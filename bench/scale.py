"""How cost grows with the corpus: the demo's stages at several corpus sizes, on Ray and in one process.

    .venv/bin/python bench/scale.py [--sizes 50 150 450] [--cpus 2]

A corpus of N MB is built deterministically from the bundled real text (tests/data/demo): each
document joins a seeded draw of sentences from one source's documents, so documents are new text
in the sources' own words, and 3% are copies (exact or with one word changed) of earlier ones, so
the dedup stages have work. It is written as 16 gzipped JSONL files. Each size runs configs/demo.yaml's
stages through `thresher run` (a fresh process, start-up included) with `executor: ray` and
`executor: inline`, from an empty work dir, alternating, `--repeats` times each (the fastest run
of each counts; every run's time is kept). Written to bench/results/scale.json: wall time, peak
memory of the whole process tree (Ray's workers included), Parquet bytes of the work dir (rows,
rejected, state) and of the output, and the ray/inline ratio.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, SOURCES, machine, sentence_pools, write_result  # noqa: E402

FILES = 16


def build_corpus(folder: Path, megabytes: int, seed: int = 0) -> int:
    """Writes the corpus (if not there yet); returns its number of documents."""
    done = folder / "_docs"
    if done.exists():
        return int(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pools = sentence_pools()
    target, size, docs, recent = megabytes * 2**20, 0, 0, []
    handles = [gzip.open(folder / f"part-{i:02d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
               for i in range(FILES)]
    while size < target:
        if recent and rng.random() < 0.03:  # a copy of a recent document, half of them edited
            text, domain = recent[int(rng.integers(len(recent)))]
            if rng.random() < 0.5:
                words = text.split()
                words[int(rng.integers(len(words)))] = "edited"
                text = " ".join(words)
        else:
            domain = SOURCES[int(rng.integers(len(SOURCES)))]
            pool = pools[domain]
            text = " ".join(pool[int(k)] for k in rng.integers(0, len(pool), int(rng.integers(4, 24))))
            recent = (recent + [(text, domain)])[-500:]
        row = {"doc_id": f"d{docs:09d}", "text": text, "domain": domain}
        handles[docs % FILES].write(json.dumps(row) + "\n")
        size += len(text.encode())
        docs += 1
    for h in handles:
        h.close()
    done.write_text(str(docs))
    return docs


class _PeakRSS:
    """Peak summed RSS of a process and all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def run(corpus: Path, executor: str, cpus: int, tmp: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["inputs"] = [{"paths": [str(corpus / "*.jsonl.gz")], "id_column": "doc_id", "domain_column": "domain"}]
    cfg.update(executor=executor, work_dir=str(tmp / f"work-{executor}"), ray={"num_cpus": cpus})
    cfg["output"]["dir"] = str(tmp / f"out-{executor}")
    cfg["shard_rows"] = 20_000
    path = tmp / f"{executor}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "thresher.pipeline.commands.cli", "run", str(path), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = _PeakRSS(proc.pid)
    out, err = proc.communicate()
    wall, peak = time.perf_counter() - t0, rss.stop()
    if proc.returncode:
        raise RuntimeError(f"{executor} run failed:\n{err[-3000:]}")
    work, output = tmp / f"work-{executor}", tmp / f"out-{executor}"
    manifest = json.loads((output / "manifest.json").read_text())
    return {"wall_seconds": round(wall, 2), "peak_rss_mb": round(peak / 2**20),
            "rows_in": manifest["totals"]["rows_in"], "rows_out": manifest["output"]["rows"],
            "work_rows_bytes": _bytes(work, "*/rows/*.parquet"),
            "work_rejected_bytes": _bytes(work, "*/rejected/*.parquet"),
            "work_state_bytes": _bytes(work, "*/state/**/*"),
            "output_bytes": _bytes(output / "data", "*.parquet"),
            "stage_seconds": manifest["timing"]["stage_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 150, 450], help="corpus sizes in MB of text")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs per size and executor; the fastest of each counts")
    ap.add_argument("--corpora", type=Path, default=Path(tempfile.gettempdir()) / "thresher-scale")
    args = ap.parse_args()
    rows = []
    for mb in args.sizes:
        corpus = args.corpora / f"{mb}mb"
        docs = build_corpus(corpus, mb)
        runs: dict[str, list[dict]] = {"inline": [], "ray": []}
        for _ in range(args.repeats):  # alternating, so that a slow spell of the machine hits both
            for executor in runs:
                with tempfile.TemporaryDirectory() as tmp:
                    runs[executor].append(run(corpus, executor, args.cpus, Path(tmp)))
        inline, on_ray = (min(r, key=lambda x: x["wall_seconds"]) for r in runs.values())
        assert inline["rows_out"] == on_ray["rows_out"], (inline["rows_out"], on_ray["rows_out"])
        for executor, best in (("inline", inline), ("ray", on_ray)):
            best["all_wall_seconds"] = [r["wall_seconds"] for r in runs[executor]]
        ratio = inline["wall_seconds"] / on_ray["wall_seconds"]
        rows.append({"megabytes": mb, "documents": docs, "inline": inline, "ray": on_ray, "best_of": args.repeats,
                     "speedup_ray_vs_inline": round(ratio, 3)})
        print(f"{mb} MB ({docs:,} docs): inline {inline['wall_seconds']:.1f} s {inline['all_wall_seconds']}, "
              f"ray ({args.cpus} CPUs) {on_ray['wall_seconds']:.1f} s {on_ray['all_wall_seconds']}: {ratio:.2f}x; "
              f"peak RSS {inline['peak_rss_mb']} / {on_ray['peak_rss_mb']} MB; work Parquet {(on_ray['work_rows_bytes'] + on_ray['work_rejected_bytes']) / on_ray['output_bytes']:.1f}x output",
              flush=True)
    path = write_result("scale.json", {"machine": machine(), "cpus": args.cpus, "config": "configs/demo.yaml stages",
                                       "sizes": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
