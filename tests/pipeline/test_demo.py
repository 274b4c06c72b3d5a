"""The README's main job: `thresher run configs/demo.yaml` on embedded Ray, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from conftest import REPO


def test_demo_pipeline_runs_on_ray_and_accounts_for_every_row(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.cli", "run", str(REPO / "configs" / "demo.yaml"),
                           "--output", str(out), "--work-dir", str(work)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[05] softdedup" in proc.stderr and "rows/s" in proc.stderr  # progress was shown
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["executor"] == "ray"
    data = pq.read_table(out / "data")
    rejected = pq.read_table(out / "rejected")
    assert data.num_rows + rejected.num_rows == manifest["totals"]["rows_in"] == 17_656
    assert set(manifest["totals"]["rejected"]) == {"length_filter:too_short", "exact_dedup:exact_duplicate",
                                                   "minhash_dedup:near_duplicate"}
    assert abs(sum(g["weight"] for g in manifest["output"]["groups"].values()) - data["weight"].to_numpy().sum()) < 1e-6
    assert set(data["group"].to_pylist()) == {"scripture", "python-docs", "fortunes"}
