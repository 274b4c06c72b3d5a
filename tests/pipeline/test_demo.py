"""The README's main job: `thresher run configs/demo.yaml` on embedded Ray, end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow.parquet as pq

from conftest import REPO
from thresher.pipeline.commands.domain_losses import alarms, domain_losses
from thresher.pipeline.engine.progress import RECORD, last_record


def test_demo_pipeline_runs_on_ray_and_accounts_for_every_row(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "run", str(REPO / "configs" / "demo.yaml"),
                           "--output", str(out), "--work-dir", str(work), "--progress-records"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[05] softdedup" in proc.stderr and "rows/s" in proc.stderr  # progress was shown, with an ETA
    assert re.search(r"\[05\] softdedup: +\d+%.*\| *\d+/\d+ \[\d\d:\d\d<\d\d:\d\d", proc.stderr)
    records = [json.loads(ln[len(RECORD):]) for ln in proc.stdout.splitlines() if ln.startswith(RECORD)]
    assert {r["stage"] for r in records} >= {"[00] ingest", "[05] softdedup"}
    expected = alarms(domain_losses(out, with_bytes=False))  # printed at the end, as the report has them
    assert expected and all(f"alarm: {a}" in proc.stderr for a in expected)
    last = last_record(proc.stdout)  # what `thresher status` shows of a cluster job
    assert last == records[-1] and last["shards_done"] == last["shards_total"] and last["eta_s"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["executor"] == "ray"
    # Ray's start-up is waited for, said and timed apart from ingest, whose time it would swell.
    waited = manifest["timing"]["stage_seconds"]["executor_start"]
    assert waited > 0.5 and "[--] ray executor: waiting for it to start" in proc.stderr
    said = re.search(r"\[--\] ray executor: ready after (\d+\.\d) s", proc.stderr)
    assert said and abs(float(said.group(1)) - waited) <= 0.051
    data = pq.read_table(out / "data")
    rejected = pq.read_table(out / "rejected")
    assert data.num_rows + rejected.num_rows == manifest["totals"]["rows_in"] == 17_656
    assert set(manifest["totals"]["rejected"]) == {"length_filter:too_short", "exact_dedup:exact_duplicate",
                                                   "minhash_dedup:near_duplicate"}
    assert abs(sum(g["weight"] for g in manifest["output"]["groups"].values()) - data["weight"].to_numpy().sum()) < 1e-6
    assert set(data["group"].to_pylist()) == {"scripture", "python-docs", "fortunes"}
