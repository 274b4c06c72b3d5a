"""`thresher ablate`: the same proxy trained on curated vs baseline data, compared on held-out text."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import REPO
from thresher.pipeline.commands.ablation import summarize


def _seed(curated: list[float], baseline: list[float]) -> dict:
    def arm(bpbs):
        return {"final": {d: {"loss": b * 0.7, "bpb": b} for d, b in zip(("a", "b"), bpbs)}}
    return {"curated": arm(curated), "baseline": arm(baseline)}


def test_summary_pairs_the_seeds_and_says_which_arm_won():
    per_seed = [_seed([1.00, 2.00], [1.10, 2.05]), _seed([1.02, 2.01], [1.09, 2.08]), _seed([0.99, 1.98], [1.12, 2.02])]
    s = summarize(per_seed)
    mean_c = [np.mean(c) for c in ([1.00, 2.00], [1.02, 2.01], [0.99, 1.98])]
    mean_b = [np.mean(b) for b in ([1.10, 2.05], [1.09, 2.08], [1.12, 2.02])]
    overall = s["difference_baseline_minus_curated"]["mean over domains"]
    assert overall["per_seed"] == pytest.approx(np.subtract(mean_b, mean_c).tolist())
    t = stats.ttest_rel(mean_b, mean_c)
    assert overall["t"] == pytest.approx(t.statistic) and overall["p"] == pytest.approx(t.pvalue)
    assert s["arms"]["curated"]["a"]["bpb"]["mean"] == pytest.approx(np.mean([1.00, 1.02, 0.99]))
    assert s["arms"]["baseline"]["b"]["bpb"]["std"] == pytest.approx(np.std([2.05, 2.08, 2.02], ddof=1))
    assert "bits per byte lower than the baseline" in s["statement"] and "paired over 3 seeds" in s["statement"]


def _ablate(*args):
    return subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "ablate", *args], capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
def test_ablate_runs_end_to_end_resumes_and_repeats(tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(work_dir=str(tmp_path / "work"), executor="inline")
    cfg["inputs"] = [dict(i, paths=[str((REPO / "configs" / p).resolve()) for p in i["paths"]]) for i in cfg["inputs"]]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    common = ["--tokens", "20000", "--seq-len", "64", "--batch-size", "8"]
    proc = _ablate(str(tmp_path / "p.yaml"), "-o", str(tmp_path / "a"), "--seeds", "2", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "a" / "ablation.json").read_text())
    domains = set(result["eval"]["documents"])
    assert domains == {"scripture", "python-docs", "fortunes"}
    for arm in ("curated", "baseline"):
        assert set(result["arms"][arm]) == domains | {"mean over domains"}
        assert len(result["curves"][arm]) == 2 and len(result["curves"][arm][0]) == 5
        assert all(np.isfinite(v["bpb"]["mean"]) and v["bpb"]["mean"] > 0 for v in result["arms"][arm].values())
    assert len(result["difference_baseline_minus_curated"]["mean over domains"]["per_seed"]) == 2
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    # Resume: both seeds are reused, the result is the same.
    again = _ablate(str(tmp_path / "p.yaml"), "-o", str(tmp_path / "a"), "--seeds", "2", *common)
    assert again.returncode == 0 and re.findall(r"\[ablate\] seed (\d): reused", again.stderr) == ["0", "1"]
    assert json.loads((tmp_path / "a" / "ablation.json").read_text())["arms"] == result["arms"]
    # The same seed from scratch elsewhere gives the same losses.
    other = _ablate(str(tmp_path / "p.yaml"), "-o", str(tmp_path / "b"), "--seeds", "1", *common)
    assert other.returncode == 0, other.stderr[-3000:]
    first = json.loads((tmp_path / "a" / "seeds" / "seed-0.json").read_text())
    repeat = json.loads((tmp_path / "b" / "seeds" / "seed-0.json").read_text())
    for arm in ("curated", "baseline"):
        assert repeat[arm]["final"] == first[arm]["final"]
    # The report of the curated output shows the ablation.
    report = subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "report", str(tmp_path / "a" / "curated")],
                            capture_output=True, text=True)
    assert report.returncode == 0 and 'id="ablation"' in (tmp_path / "a" / "curated" / "report.html").read_text()


@pytest.mark.slow
def test_ablate_evaluates_on_the_yaml_eval_files(tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    eval_file = tmp_path / "held_out.txt"
    eval_file.write_text("The quick brown fox jumps over the lazy dog.\nA second held-out line of plain prose.\n")
    cfg.update(work_dir=str(tmp_path / "work"), executor="inline", eval={"prose": [str(eval_file)]})
    cfg["inputs"] = [dict(i, paths=[str((REPO / "configs" / p).resolve()) for p in i["paths"]]) for i in cfg["inputs"]]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    proc = _ablate(str(tmp_path / "p.yaml"), "-o", str(tmp_path / "a"), "--seeds", "1", "--tokens", "10000",
                   "--seq-len", "64", "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "a" / "ablation.json").read_text())
    assert result["eval"] == {"source": "yaml", "documents": {"prose": 2}}
