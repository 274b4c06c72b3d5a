"""`thresher demo`: every stage on the bundled corpus, with the models it makes itself (the whole
mission, as a newcomer first runs it; about a minute and a half on 2 cores)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from thresher.pipeline.engine import registry


def _demo(out):
    return subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "demo", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.slow  # the whole demo, twice (about 5 minutes on 2 cores)
def test_the_demo_runs_every_stage_and_a_rerun_reuses_everything(tmp_path):
    res = _demo(tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    out = tmp_path / "out"
    m = json.loads((out / "manifest.json").read_text())
    ran = {s["name"] for s in m["stages"]}
    assert ran >= set(registry.available()), set(registry.available()) - ran
    t = m["totals"]
    assert t["rows_in"] == t["rows_out"] + t["rejected_total"] and t["rows_out"] > 1000
    # The harmful filter finds the harmful documents mixed into the inputs.
    harmful = pq.read_table(next((out / "rejected").glob("*-harmful_filter")))
    spam = sum(d == "forum-spam" for d in harmful["domain"].to_pylist())
    assert spam >= 90, spam
    # The models it made, the benchmark measured from them, the mixture, the report and the shards.
    models = tmp_path / "models"
    bench = (models / "benchmark.csv").read_text().splitlines()
    assert bench[0] == "model,error" and len(bench) == 5
    assert len(pq.read_table(models / "bpb.parquet")) == 4
    mix = json.loads((out / "mixture.json").read_text())
    assert abs(sum(mix["proportions"]) - 1) < 1e-6 and len(mix["proportions_per_round"]) > 1
    assert (out / "report.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "shards" / "export.json").read_text())["tokens"] > 100_000
    for line in ("Mixture (Aioli vs stratified):", "Where to look:", "report", "training shards"):
        assert line in res.stdout
    first = _digests(out / "data")

    again = _demo(tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[demo] training" not in again.stderr  # the models are reused
    assert again.stderr.count(": reused") >= 8  # and so are the finished stages
    assert _digests(out / "data") == first
