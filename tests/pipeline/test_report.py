"""The HTML report renders, with the run's counts and real plots."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import thresher, write_pipeline
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        if self.tags and self.tags[-1] == "td":
            self.cells.append(data.strip())

    def handle_endtag(self, tag):
        if self.tags and self.tags[-1] == tag:
            self.tags.pop()


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>'


@pytest.fixture
def reported_run(demo_subset, tmp_path):
    """A run over three demo files plus a hostile domain (markup in its name, ids and texts) that a
    filter empties, rendered with `thresher report`."""
    hostile = [{"doc_id": f"<b>{i}</b>", "text": f"{HOSTILE} short {i}", "domain": HOSTILE} for i in range(5)]
    (demo_subset / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hostile))
    stages = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 30}, {"stage": "exact_dedup"},
              {"stage": "minhash_dedup", "policy": "remove"}, {"stage": "softdedup"}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz"),
                                                               str(demo_subset / "hostile.jsonl")],
                                                     "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    proc = thresher("report", res.output_dir)
    assert proc.returncode == 0, proc.stderr
    return res.output_dir, proc.stderr


def _by_domain(out_dir):
    """Rows in, out and rejected per reason of every domain, counted here from the Parquet files."""
    kept = pq.read_table(out_dir / "data", columns=["domain"])["domain"].to_pylist()
    rej = pa.concat_tables(pq.read_table(p, columns=["domain", "drop_stage", "drop_reason"])
                           for p in sorted((out_dir / "rejected").glob("*/*.parquet")))
    counts = {}
    for d in kept:
        counts.setdefault(d, Counter())["out"] += 1
    for d, st, r in zip(*(rej[c].to_pylist() for c in ("domain", "drop_stage", "drop_reason"))):
        counts.setdefault(d, Counter())[f"{st}:{r}"] += 1
    return counts


def test_report_answers_what_each_domain_lost(reported_run):
    out_dir, stderr = reported_run
    page = (out_dir / "report.html").read_text()
    parsed = _Collect()
    parsed.feed(page)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    for st in manifest["stages"]:
        i = parsed.cells.index(st["name"])
        assert parsed.cells[i + 1:i + 3] == [f"{st['rows_in']:,}", f"{st['rows_out']:,}"]
    for domain, c in _by_domain(out_dir).items():
        rows_in = sum(c.values())
        i = parsed.cells.index(domain)  # the domains table: rows in, MB in, rows out, MB out, removed
        assert parsed.cells[i + 1] == f"{rows_in:,}" and parsed.cells[i + 3] == f"{c['out']:,}"
        assert parsed.cells[i + 5] == f"{1 - c['out'] / rows_in:.1%}"
        lost = 1 - c["out"] / rows_in
        assert (f"domain {domain!r} lost {lost:.0%}" in html.unescape(page)) == (lost > 0.5)
        assert (f"domain {domain!r} lost" in stderr) == (lost > 0.5)  # the CLI says so too
    assert f"length_filter:too_short removed 100% of domain {HOSTILE!r}" in html.unescape(page)
    # Examples per reason, with the scores that decided; the same documents on every render.
    for folder in sorted((out_dir / "rejected").glob("*")):
        for reason in set(pq.read_table(folder, columns=["drop_reason"])["drop_reason"].to_pylist()):
            assert f"<h3>{folder.name}: {reason}</h3>" in page
    detail = pq.read_table(out_dir / "rejected" / "02-length_filter", columns=["drop_detail"])
    assert all(json.loads(d)["n_words"] < 30 for d in detail["drop_detail"].to_pylist())
    assert re.search(r"n_words: \d+", page)
    assert "two members" in page and "segment bound" in page
    # Nothing from a document can become markup; the page loads nothing and runs nothing.
    assert not re.search(r"<script|<img[^>]*onerror|<b>\d", page, re.I)
    assert html.escape(HOSTILE) in page
    assert "default-src 'none'" in page and "http://" not in page.split("<details>")[0]
    alts = [img["alt"] for img in parsed.images]
    assert len(alts) == 4 and all(a.endswith(".") for a in alts)
    for img in parsed.images:
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(page.encode()) < 2_000_000
    from thresher.pipeline.commands.report import render

    assert render(out_dir).read_text() == page  # deterministic
    dedup = next(st for st in manifest["stages"] if st["name"] == "minhash_dedup")
    state = dedup["state"]
    top = state["largest_clusters"][0]
    i = parsed.cells.index(top["representative"])  # the largest clusters, with their sizes and sources
    assert parsed.cells[i + 1] == f"{top['size']:,}" and ": " in parsed.cells[i + 2]
    for source, v in state["duplicates_by_source"].items():  # each source's share of near-duplicates
        i = parsed.cells.index(source)
        assert parsed.cells[i + 1:i + 4] == [f"{v['rows']:,}", f"{v['duplicates']:,}", f"{v['share']:.1%}"]


def test_report_in_a_real_browser(reported_run, tmp_path):
    """Headless Chromium (Debian's package; make setup installs it where apt-get runs) loads the
    page: no console message at all (a blocked load or script would log one), every section there."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make setup installs Debian's chromium where apt-get is available)")
    out_dir, _ = reported_run
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                           "--v=0", "--dump-dom", (out_dir / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    for section in ("alarms", "stages", "domains", "rejected-examples", "clusters", "plots", "manifest"):
        assert f'id="{section}"' in proc.stdout
    assert proc.stdout.count("<img") == 4


def test_report_needs_a_finished_run(tmp_path):
    proc = thresher("report", tmp_path)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr
