"""`thresher report OUTPUT_DIR`: one self-contained HTML page about a finished run.

Plots (matplotlib, embedded as PNG): rows kept and rejected per stage, perplexity histograms with
the thresholds the run chose, duplicate-cluster sizes, weight per group, and the mixture
proportions per Aioli round when the run wrote a mixture.json. Then the manifest's counts.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

_NUMERIC_PLOTS = (("ref_ppl", "reference-model perplexity"), ("harm_ppl", "perplexity under the harmful model"),
                  ("commonness", "n-gram commonness"))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.set_title(title)
    return fig, ax


def _thresholds(manifest: dict, column: str) -> list[tuple[str, float]]:
    lines = []
    for st in manifest["stages"]:
        state = st.get("state", {})
        if column == "commonness" and "segment_upper_bounds" in state:
            lines += [("segment", b) for b in state["segment_upper_bounds"] if np.isfinite(b) and b > 0]
        if column == "harm_ppl" and "tau" in state:
            lines.append((f"tau ({state.get('method', '')})", state["tau"]))
        if state.get("column") == column:
            for group, (lo, hi) in state.get("kept_range", {}).items():
                lines += [(f"{group} kept from", lo)] if lo is not None else []
                lines += [(f"{group} kept below", hi)] if hi is not None else []
    return lines


def plots(out_dir: Path, manifest: dict) -> list[tuple[str, str]]:
    """(caption, base64 PNG) pairs."""
    figs = []
    stages = manifest["stages"]
    fig, ax = _figure("rows per stage")
    names = [s["name"] for s in stages]
    kept = [s["rows_out"] for s in stages]
    rejected = [sum(s["rejected"].values()) for s in stages]
    ax.bar(names, kept, label="kept")
    ax.bar(names, rejected, bottom=kept, label="rejected")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    figs.append(("Rows kept and rejected by each stage", _png(fig)))

    files = sorted((out_dir / "data").glob("*.parquet"))
    if not files:
        return figs
    available = set(pq.read_schema(files[0]).names)
    wanted = [c for c in ("ref_ppl", "harm_ppl", "commonness", "dup_cluster_size", "weight", "group")
              if c in available]
    table = pq.read_table(files, columns=wanted) if len(files) == 1 else \
        pq.ParquetDataset(files).read(columns=wanted)
    for column, label in _NUMERIC_PLOTS:
        if column in table.column_names:
            v = table[column].to_numpy(zero_copy_only=False).astype(float)
            v = v[np.isfinite(v) & (v > 0)]
            if len(v) == 0:
                continue
            fig, ax = _figure(f"{label} (kept rows)")
            ax.hist(np.log10(v), bins=60)
            ax.set_xlabel(f"log10 {column}")
            for name, value in _thresholds(manifest, column):
                ax.axvline(np.log10(value), color="red", linestyle="--")
                ax.annotate(name, (np.log10(value), ax.get_ylim()[1] * 0.9), rotation=90, fontsize=7, color="red")
            figs.append((f"Histogram of {column}", _png(fig)))
    if "dup_cluster_size" in table.column_names:
        sizes = table["dup_cluster_size"].to_numpy(zero_copy_only=False)
        fig, ax = _figure("duplicate cluster sizes (kept rows)")
        counts = np.bincount(sizes)
        ax.bar(np.arange(1, len(counts)), counts[1:])
        ax.set_yscale("log")
        ax.set_xlabel("cluster size")
        figs.append(("Near-duplicate cluster sizes", _png(fig)))
    groups = manifest["output"].get("groups", {})
    if groups:
        fig, ax = _figure("total weight per group")
        ax.bar(list(groups), [g["weight"] for g in groups.values()])
        ax.tick_params(axis="x", rotation=30)
        figs.append(("Total weight of each group in the output", _png(fig)))
    mixture = out_dir / "mixture.json"
    if mixture.exists():
        mix = json.loads(mixture.read_text())
        rounds = np.array(mix["proportions_per_round"])
        fig, ax = _figure("mixture proportions per Aioli round")
        for j, g in enumerate(mix["groups"]):
            ax.plot(rounds[:, j], label=g, marker="o")
        ax.set_xlabel("round")
        ax.legend(fontsize=7)
        figs.append(("Aioli mixture proportions per round", _png(fig)))
    return figs


def _cluster_tables(manifest: dict) -> str:
    """For each dedup stage that lists them: its largest clusters and each source's share of
    near-duplicates (removed, with policy remove), so one giant cluster or one source losing most
    of its rows shows at a glance."""
    parts = []
    for st in manifest["stages"]:
        state = st.get("state", {})
        if "largest_clusters" not in state:
            continue
        verb = "removed" if state.get("policy") == "remove" else "near-duplicates"
        rows = "".join(f"<tr><td>{html.escape(c['representative'])}</td><td>{c['size']:,}</td><td>"
                       + html.escape(", ".join(f"{s}: {n:,}" for s, n in c["sources"].items())) + "</td></tr>"
                       for c in state["largest_clusters"])
        sources = "".join(f"<tr><td>{html.escape(s)}</td><td>{v['rows']:,}</td><td>{v['duplicates']:,}</td>"
                          f"<td>{v['share']:.1%}</td></tr>" for s, v in state.get("duplicates_by_source", {}).items())
        parts.append(f"<h3>{html.escape(st['name'])}</h3>"
                     f"<p>{state.get('split_from_chains', 0):,} member(s) split from chained clusters; "
                     f"{state.get('capped', 0):,} left out of clusters past max_cluster_size.</p>"
                     f'<table class="clusters"><tr><th>largest clusters: representative</th><th>size</th>'
                     f"<th>sources</th></tr>{rows}</table>"
                     f'<table class="sources"><tr><th>source</th><th>rows</th><th>{verb}</th><th>share</th></tr>'
                     f"{sources}</table>")
    return "<h2>Near-duplicate clusters</h2>" + "".join(parts) if parts else ""


def render(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{out_dir} has no manifest.json: give the output dir of a finished run")
    manifest = json.loads(manifest_path.read_text())
    rows = []
    for st in manifest["stages"]:
        rej = ", ".join(f"{html.escape(r)}: {n:,}" for r, n in st["rejected"].items()) or "-"
        rows.append(f"<tr><td>{html.escape(st['name'])}</td><td>{st['rows_in']:,}</td><td>{st['rows_out']:,}</td>"
                    f"<td>{rej}</td></tr>")
    t = manifest["totals"]
    images = "\n".join(f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,{b}">'
                       f"<figcaption>{html.escape(c)}</figcaption></figure>" for c, b in plots(out_dir, manifest))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thresher report: {html.escape(manifest['name'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}
figure{{margin:1em 0}}</style></head><body>
<h1>Thresher report: {html.escape(manifest['name'])}</h1>
<p>{t['rows_in']:,} rows in = {t['rows_out']:,} out + {t['rejected_total']:,} rejected;
{manifest['timing']['wall_seconds']:.1f} s; config {html.escape(manifest['config_hash'])}.</p>
<h2>Stages</h2>
<table id="stages"><tr><th>stage</th><th>in</th><th>out</th><th>rejected</th></tr>
{''.join(rows)}</table>
{_cluster_tables(manifest)}
<h2>Plots</h2>
{images}
<h2>Manifest</h2><pre>{html.escape(json.dumps(manifest, indent=2))}</pre>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
