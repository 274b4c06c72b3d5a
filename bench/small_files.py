"""Many small input files against the same rows in one file, through the demo's stages.

    .venv/bin/python bench/small_files.py [--files 5000 2000] [--shard-rows 50]

Each corpus is N one-line JSONL files (N documents of the bundled corpus, in order), and the
contender is one JSONL file holding the same N lines. Both run the stages of configs/demo.yaml
(normalize, length_filter, exact_dedup, minhash_dedup, softdedup) through `thresher run` in a
fresh process (start-up included), `executor: inline`, from an empty work dir, with the
`shard_rows` of the report that found the problem (50). Target: the files within 2x of the one
file, and under 2 minutes at 2,000 files. Writes bench/results/small_files.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, demo_texts, machine, write_result  # noqa: E402


def _pipeline(folder: Path, paths: list[str], shard_rows: int) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg.update(inputs=[{"paths": paths}], executor="inline", shard_rows=shard_rows, work_dir="work",
               output={"dir": "out"})
    path = folder / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(pipeline: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "run", str(pipeline), "-q"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return wall, json.loads((pipeline.parent / "out" / "manifest.json").read_text())


def measure(n: int, shard_rows: int) -> dict:
    lines = [json.dumps({"text": t}) + "\n" for t in demo_texts()[:n]]
    with tempfile.TemporaryDirectory() as tmp:
        many, one = Path(tmp) / "many", Path(tmp) / "one"
        (many / "files").mkdir(parents=True)
        one.mkdir()
        for i, line in enumerate(lines):
            (many / "files" / f"{i:05d}.jsonl").write_text(line)
        (one / "all.jsonl").write_text("".join(lines))
        files_s, files_m = _run(_pipeline(many, ["files/*.jsonl"], shard_rows))
        one_s, one_m = _run(_pipeline(one, ["all.jsonl"], shard_rows))
    assert files_m["output"]["rows"] == one_m["output"]["rows"]
    return {"files": n, "rows_out": one_m["output"]["rows"], "seconds": {"files": round(files_s, 2),
            "one_file": round(one_s, 2)}, "ratio_files_vs_one_file": round(files_s / one_s, 2),
            "shards": {"files": files_m["stages"][1]["shards"], "one_file": one_m["stages"][1]["shards"]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, nargs="+", default=[5000, 2000])
    ap.add_argument("--shard-rows", type=int, default=50)
    args = ap.parse_args()
    runs = []
    for n in args.files:
        r = measure(n, args.shard_rows)
        runs.append(r)
        print(f"{n:,} one-line files: {r['seconds']['files']:.1f} s; the same rows in one file: "
              f"{r['seconds']['one_file']:.1f} s ({r['ratio_files_vs_one_file']:.2f}x; target <= 2x)")
    path = write_result("small_files.json", {"machine": machine(), "config": "configs/demo.yaml stages",
                                             "shard_rows": args.shard_rows, "executor": "inline", "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
