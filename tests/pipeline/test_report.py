"""The HTML report renders, with the run's counts and real plots."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser

from conftest import write_pipeline
from thresher.pipeline.config import load_config
from thresher.pipeline.executor import InlineExecutor
from thresher.pipeline.progress import Progress
from thresher.pipeline.runner import Runner


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


def test_report_renders_counts_and_plots(demo_subset, tmp_path):
    stages = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 30},
              {"stage": "minhash_dedup", "policy": "reweight"}, {"stage": "softdedup"}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                     "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages)
    res = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False)).run()
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.cli", "report", str(res.output_dir)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = (res.output_dir / "report.html").read_text()
    parsed = _Collect()
    parsed.feed(page)
    alts = [img["alt"] for img in parsed.images]
    assert alts == ["Rows kept and rejected by each stage", "Histogram of commonness",
                    "Near-duplicate cluster sizes", "Total weight of each group in the output"]
    for img in parsed.images:
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((res.output_dir / "manifest.json").read_text())
    for st in manifest["stages"]:
        i = parsed.cells.index(st["name"])
        assert parsed.cells[i + 1:i + 3] == [f"{st['rows_in']:,}", f"{st['rows_out']:,}"]
    assert "segment_weights" in page  # the softdedup state summary made it into the manifest
    dedup = next(st for st in manifest["stages"] if st["name"] == "minhash_dedup")
    state = dedup["state"]
    top = state["largest_clusters"][0]
    i = parsed.cells.index(top["representative"])  # the largest clusters, with their sizes and sources
    assert parsed.cells[i + 1] == f"{top['size']:,}" and ": " in parsed.cells[i + 2]
    for source, v in state["duplicates_by_source"].items():  # each source's share of near-duplicates
        i = parsed.cells.index(source)
        assert parsed.cells[i + 1:i + 4] == [f"{v['rows']:,}", f"{v['duplicates']:,}", f"{v['share']:.1%}"]
    assert sum(v["rows"] for v in state["duplicates_by_source"].values()) == dedup["rows_in"]


def test_report_needs_a_finished_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.cli", "report", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr
