"""`thresher report OUTPUT_DIR`: one self-contained HTML page about a finished run.

It answers what a data engineer asks of a curation run, in this order: is anything alarming (a
domain that lost most of its rows, one reason taking a large share of a domain), what each stage
removed, which domain lost how much (rows and bytes), examples of the documents each reason removed
with the scores that decided, documents along each perplexity scale and next to the thresholds,
the largest near-duplicate clusters with two members each, the mixture per round, the ablation's
result when `thresher ablate` ran on this output, and plots with labelled axes. Everything is inline (PNG data URLs, no script, a Content-Security-Policy that
forbids any load), and every piece of a document is escaped and cut short.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline.commands.domain_losses import MAX_LOSS, MAX_REASON_LOSS, alarms, domain_losses
from thresher.pipeline.core import schema
from thresher.scorers.hashing import string_hashes

_SCORES = (("ref_ppl", "reference-model perplexity"), ("harm_ppl", "perplexity under the harmful-text model"),
           ("commonness", "n-gram commonness"))
EXAMPLES = 3  # documents shown per reject reason
SNIPPET = 280  # characters of a document shown


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _snippet(text: str | None) -> str:
    text = " ".join((text or "").split())
    return _esc(text if len(text) <= SNIPPET else text[:SNIPPET] + " …")


def _number(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return _esc(v)


@dataclass
class _Rows:
    """What the sections show of the run's rows, each file read once: the output's rows (id, text
    and the score and cluster columns it has) and every rejected row (its folder label NN-stage,
    id, text, reason) with its drop_detail parsed."""

    kept: pa.Table | None
    rejected: pa.Table
    details: list[dict]


def _read_rows(out_dir: Path) -> _Rows:
    import pyarrow.dataset as ds

    def read(files: list[Path], wanted: list[str]) -> pa.Table:
        data = ds.dataset([str(f) for f in files], format="parquet")
        return data.to_table(columns=[c for c in wanted if c in data.schema.names])

    files = sorted((out_dir / "data").glob("*.parquet"))
    kept = read(files, [schema.ID, schema.TEXT, "dup_cluster", "dup_cluster_size"] + [c for c, _ in _SCORES]) \
        if files else None
    parts = []
    for folder in sorted(p for p in (out_dir / "rejected").glob("*") if p.is_dir()):
        files = sorted(folder.glob("*.parquet"))
        if files:
            t = read(files, [schema.ID, schema.TEXT, schema.DROP_REASON, schema.DROP_DETAIL])
            if schema.DROP_DETAIL not in t.column_names:  # written before rejected rows kept it
                t = t.append_column(schema.DROP_DETAIL, pa.array(["{}"] * t.num_rows, pa.string()))
            parts.append(t.append_column("label", pa.array([folder.name] * t.num_rows, pa.string()))
                         .cast(pa.schema([pa.field(c, pa.string()) for c in _REJECTED])))
    rejected = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in _REJECTED})
    details = [json.loads(d or "{}") for d in rejected[schema.DROP_DETAIL].to_pylist()]
    return _Rows(kept, rejected.drop_columns([schema.DROP_DETAIL]), details)


_REJECTED = [schema.ID, schema.TEXT, schema.DROP_REASON, schema.DROP_DETAIL, "label"]


def _picked(ids: pa.Array | pa.ChunkedArray, k: int) -> np.ndarray:
    """Positions of the k rows with the smallest id hashes, in row order: the same rows every time."""
    if len(ids) <= k:
        return np.arange(len(ids))
    return np.sort(np.argsort(string_hashes(pc.cast(ids, pa.string())), kind="stable")[:k])


# --- plots ----------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _slanted(ax) -> None:
    """Category names at 40 degrees, anchored at their bar: long stage names stay apart."""
    for label in ax.get_xticklabels():
        label.set_rotation(40)
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")


def _thresholds(manifest: dict, column: str) -> list[tuple[str, float]]:
    lines = []
    for st in manifest["stages"]:
        state = st.get("state", {})
        if column == "commonness" and "segment_upper_bounds" in state:
            lines += [("segment bound", b) for b in state["segment_upper_bounds"] if np.isfinite(b) and b > 0]
        if column == "harm_ppl" and state.get("tau"):
            lines.append((f"tau ({state.get('method', '')})", state["tau"]))
        if state.get("column") == column:
            for group, (lo, hi) in state.get("kept_range", {}).items():
                lines += [(f"{group}: kept from", lo)] if lo is not None else []
                lines += [(f"{group}: kept below", hi)] if hi is not None else []
    return lines


def plots(out_dir: Path, manifest: dict, table: pa.Table | None) -> list[tuple[str, str]]:
    """(what the plot shows, base64 PNG) pairs; `table`: the output's rows (_Rows.kept)."""
    figs = []
    stages = manifest["stages"]
    fig, ax = _figure("rows per stage", "stage", "rows")
    names = [s["name"] for s in stages]
    kept = [s["rows_out"] for s in stages]
    ax.bar(names, kept, label="kept")
    ax.bar(names, [sum(s["rejected"].values()) for s in stages], bottom=kept, label="rejected")
    _slanted(ax)
    ax.legend()
    figs.append(("Rows each stage kept (blue) and rejected (orange), in pipeline order.", _png(fig)))
    if table is None:
        return figs
    for column, label in _SCORES:
        if column not in table.column_names:
            continue
        v = table[column].to_numpy(zero_copy_only=False).astype(float)
        v = v[np.isfinite(v) & (v > 0)]
        if not len(v):
            continue
        fig, ax = _figure(f"{label}, kept rows", f"log10 {column}", "documents")
        ax.hist(np.log10(v), bins=60)
        marks = _thresholds(manifest, column)
        for i, (name, value) in enumerate(marks):
            ax.axvline(np.log10(value), color="red", linestyle="--", linewidth=1,
                       label="thresholds" if i == 0 else None)
        if marks:
            ax.legend(fontsize=8)
        names = sorted({n for n, _ in marks})
        figs.append((f"How {column} is distributed over the output's documents"
                     + (f"; dashed red lines: {', '.join(names)}." if names else "."), _png(fig)))
    if "dup_cluster_size" in table.column_names:
        counts = np.bincount(table["dup_cluster_size"].to_numpy(zero_copy_only=False))
        fig, ax = _figure("near-duplicate cluster sizes, kept rows", "cluster size", "kept documents (log)")
        ax.bar(np.arange(1, len(counts)), counts[1:])
        ax.set_yscale("log")
        figs.append(("How many kept documents belong to a near-duplicate cluster of each size "
                     "(1: no near-duplicate).", _png(fig)))
    groups = manifest["output"].get("groups", {})
    if groups:
        fig, ax = _figure("total weight per group", "group", "sum of weight")
        ax.bar(list(groups), [g["weight"] for g in groups.values()])
        _slanted(ax)
        figs.append(("The share of training each group gets: the sum of its rows' weight.", _png(fig)))
    mixture = _mixture(out_dir)
    if mixture:
        rounds = np.array(mixture["proportions_per_round"])
        fig, ax = _figure("mixture proportions per Aioli round", "round (0: stratified)", "proportion")
        for j, g in enumerate(mixture["groups"]):
            ax.plot(rounds[:, j], label=g, marker="o")
        ax.legend(fontsize=8)
        figs.append(("Each group's proportion after every Aioli round of the proxy run.", _png(fig)))
    ablation = out_dir / "ablation.json"
    if ablation.exists():
        figs.append(("Held-out bits per byte while the ablation's proxy trained, one line per seed: blue on this "
                     "output, orange on the baseline.", _png(curves_figure(json.loads(ablation.read_text())["curves"]))))
    return figs


def curves_figure(curves: dict[str, list[list[dict]]]):
    """The ablation's training curves: held-out bits per byte (mean over domains) against training
    tokens, one line per arm and seed."""
    fig, ax = _figure("ablation: proxy training curves", "training tokens", "eval bits per byte (mean of domains)")
    for arm, color in (("curated", "tab:blue"), ("baseline", "tab:orange")):
        for k, curve in enumerate(curves[arm]):
            ax.plot([c["tokens"] for c in curve], [np.mean([v["bpb"] for v in c["eval"].values()]) for c in curve],
                    color=color, marker="o", label=arm if k == 0 else None)
    ax.legend(fontsize=8)
    return fig


def _mixture(out_dir: Path) -> dict | None:
    """mixture.json when the proxy ran rounds (a single group's has none to show)."""
    path = out_dir / "mixture.json"
    mix = json.loads(path.read_text()) if path.exists() else None
    return mix if mix and "proportions_per_round" in mix else None


# --- tables ---------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _domains_section(losses: list[dict]) -> str:
    rows = [[_esc(r[schema.DOMAIN]), f"{r['rows_in']:,}", f"{r['bytes_in'] / 1e6:,.2f}", f"{r['rows_out']:,}",
             f"{r['bytes_out'] / 1e6:,.2f}", f"{r['share_removed']:.1%}",
             "<br>".join(f"{_esc(k)}: {n:,} ({n / r['rows_in']:.1%})" for k, n in r["rejected"].items()) or "-"]
            for r in losses]
    return ("<h2 id=\"domains\">Domains</h2><p>Rows and megabytes (UTF-8) of each domain in and out, the share "
            "of its rows removed, and the rows each stage:reason removed.</p>"
            + _table(["domain", "rows in", "MB in", "rows out", "MB out", "removed", "rejected by reason"], rows,
                     "domains"))


def _reject_examples(rows: _Rows) -> str:
    parts = []
    rej = rows.rejected
    labels, reasons = rej["label"], rej[schema.DROP_REASON]
    for label, reason in sorted(set(zip(labels.to_pylist(), reasons.to_pylist()))):
        where = np.flatnonzero(pc.and_(pc.equal(labels, label), pc.equal(reasons, reason)).to_numpy(zero_copy_only=False))
        shown = []
        for i in where[_picked(rej[schema.ID].take(pa.array(where)), EXAMPLES)]:
            detail = rows.details[i]
            shown.append([_esc(rej[schema.ID][i].as_py()), _snippet(rej[schema.TEXT][i].as_py()),
                          "<br>".join(f"{_esc(k)}: {_number(v)}" for k, v in detail.items()) or "-"])
        parts.append(f"<h3>{_esc(label)}: {_esc(reason)}</h3>"
                     + _table(["id", "text", "scores that decided"], shown, "examples"))
    if not parts:
        return ""
    return ("<h2 id=\"rejected-examples\">Rejected documents, by reason</h2><p>Up to "
            f"{EXAMPLES} documents per reason, picked by the hash of their id (the same ones every time).</p>"
            + "".join(parts))


def _score_examples(rows: _Rows, manifest: dict) -> str:
    """For each perplexity column: documents at the 5th, 50th and 95th percentile of the output,
    and the kept and rejected documents next to each threshold the run chose."""
    if rows.kept is None:
        return ""
    rej, parts = rows.rejected, []
    for column, label in _SCORES[:2]:
        if column not in rows.kept.column_names:
            continue
        values = rows.kept[column].to_numpy(zero_copy_only=False).astype(float)
        ids = rows.kept[schema.ID].to_pylist()
        # (value, id, status, table, row): kept rows, then the rejected rows whose detail has the score
        kept = sorted(((v, ids[i], "kept", rows.kept, i) for i, v in enumerate(values) if np.isfinite(v)),
                      key=lambda e: (e[0], e[1]))
        if not kept:
            continue
        dropped = [(float(d[column]), rej[schema.ID][i].as_py(), f"rejected ({rej[schema.DROP_REASON][i].as_py()})",
                    rej, i) for i, d in enumerate(rows.details)
                   if isinstance(d.get(column), (int, float)) and np.isfinite(d[column])]

        def row(where: str, entry) -> list[str]:
            v, doc, status, table, i = entry
            return [where, _esc(doc), _number(v), _esc(status), _snippet(table[schema.TEXT][i].as_py())]

        shown = [row(f"{q}th percentile", kept[min(len(kept) - 1, int(q / 100 * len(kept)))]) for q in (5, 50, 95)]
        everything = sorted(kept + dropped, key=lambda e: (e[0], e[1]))
        at = np.array([e[0] for e in everything])
        for name, tau in _thresholds(manifest, column):
            i = int(np.searchsorted(at, tau))
            shown += [row(f"{'below' if e[0] < tau else 'at or above'} {_esc(name)} {tau:.4g}", e)
                      for e in everything[max(0, i - 1):i + 1]]
        parts.append(f"<h3>{_esc(label)} ({_esc(column)})</h3>"
                     + _table(["where", "id", column, "status", "text"], shown, "examples"))
    if not parts:
        return ""
    return "<h2 id=\"score-examples\">Documents along each perplexity scale</h2>" + "".join(parts)


def _cluster_members(rows: _Rows, wanted: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Up to two (id, text) members of each wanted cluster: kept rows first, then removed ones."""
    members: dict[str, list[tuple[str, str]]] = {}
    candidates = []
    if rows.kept is not None and "dup_cluster" in rows.kept.column_names:
        hit = pc.fill_null(pc.is_in(rows.kept["dup_cluster"], value_set=pa.array(sorted(wanted), pa.string())), False)
        candidates += [(rows.kept, i, rows.kept["dup_cluster"][i].as_py())
                       for i in np.flatnonzero(hit.to_numpy(zero_copy_only=False))]
    candidates += [(rows.rejected, i, d["dup_cluster"]) for i, d in enumerate(rows.details)
                   if d.get("dup_cluster") in wanted]
    for table, i, cluster in candidates:
        text = table[schema.TEXT][i].as_py()
        if text is not None and len(members.setdefault(cluster, [])) < 2:
            members[cluster].append((table[schema.ID][i].as_py(), text))
    return members


def _cluster_section(rows: _Rows, manifest: dict) -> str:
    """Per dedup stage: its largest clusters with two member snippets, and each source's share of
    near-duplicates, so one giant cluster or one source losing most of its rows shows at a glance."""
    wanted = {c["representative"] for st in manifest["stages"] for c in st.get("state", {}).get("largest_clusters", [])}
    texts = _cluster_members(rows, wanted) if wanted else {}
    parts = []
    for st in manifest["stages"]:
        state = st.get("state", {})
        if "largest_clusters" not in state:
            continue
        verb = "removed" if state.get("policy") == "remove" else "near-duplicates"
        rows = [[_esc(c["representative"]), f"{c['size']:,}",
                 _esc(", ".join(f"{s}: {n:,}" for s, n in c["sources"].items())),
                 "<br>".join(f"<b>{_esc(doc)}</b>: {_snippet(text)}" for doc, text in texts.get(c["representative"], []))]
                for c in state["largest_clusters"]]
        sources = [[_esc(s), f"{v['rows']:,}", f"{v['duplicates']:,}", f"{v['share']:.1%}"]
                   for s, v in state.get("duplicates_by_source", {}).items()]
        parts.append(f"<h3>{_esc(st['name'])}</h3>"
                     f"<p>{state.get('split_from_chains', 0):,} member(s) split from chained clusters; "
                     f"{state.get('capped', 0):,} left out of clusters past max_cluster_size.</p>"
                     + _table(["largest clusters: representative", "size", "sources", "two members"], rows,
                              "clusters")
                     + _table(["source", "rows", verb, "share"], sources, "sources"))
    return "<h2 id=\"clusters\">Near-duplicate clusters</h2>" + "".join(parts) if parts else ""


def _mixture_section(out_dir: Path) -> str:
    mix = _mixture(out_dir)
    if not mix:
        return ""
    rows = [[("stratified" if i == 0 else f"round {i}")] + [f"{p:.3f}" for p in r]
            for i, r in enumerate(mix["proportions_per_round"])]
    rows.append(["<b>mixture</b>"] + [f"<b>{p:.3f}</b>" for p in mix["proportions"]])
    return ("<h2 id=\"mixture\">Mixture proportions per round</h2>"
            + _table(["round"] + list(mix["groups"]), rows, "mixture"))


def _ablation_section(out_dir: Path) -> str:
    """`thresher ablate`'s result, when it was run on this output: eval bits per byte per domain
    and arm (mean ± std over seeds), the paired difference, and its one-line statement."""
    path = out_dir / "ablation.json"
    if not path.exists():
        return ""
    a = json.loads(path.read_text())
    diff = a["difference_baseline_minus_curated"]
    rows = [[_esc(d)] + [f"{a['arms'][arm][d]['bpb']['mean']:.4f} ± {a['arms'][arm][d]['bpb']['std']:.4f}"
                         for arm in ("curated", "baseline")]
            + [f"{diff[d]['bpb']['mean']:+.4f}" + (f" (p = {diff[d]['p']:.3f})" if "p" in diff[d] else "")]
            for d in a["arms"]["curated"]]
    s = a["settings"]
    return (f"<h2 id=\"ablation\">Ablation: does curation help?</h2><p>{_esc(a['statement'])} The same proxy LM "
            f"({_esc(s['size'])}, {s['tokens']:,} training tokens per arm and seed, {a['seeds']} seeds) trained on "
            f"this output and on the baseline ({_esc(s['baseline'])}); held-out text: {_esc(a['eval']['source'])}.</p>"
            + _table(["eval domain", "curated bits/byte", "baseline bits/byte", "baseline - curated"], rows,
                     "ablation"))


def render(out_dir: str | Path, max_loss: float = MAX_LOSS, max_reason_loss: float = MAX_REASON_LOSS) -> Path:
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{out_dir} has no manifest.json: give the output dir of a finished run")
    manifest = json.loads(manifest_path.read_text())
    losses = domain_losses(out_dir)
    rows = _read_rows(out_dir)
    found = alarms(losses, max_loss=max_loss, max_reason_loss=max_reason_loss)
    alarm_html = ('<div id="alarms" class="alarms"><h2>Alarms</h2><ul>'
                  + "".join(f"<li>{_esc(a)}</li>" for a in found) + "</ul></div>") if found else \
        '<div id="alarms"><p>No alarms: no domain lost more than ' \
        f"{max_loss:.0%} of its rows and no reason more than {max_reason_loss:.0%} of a domain.</p></div>"
    stage_rows = [[_esc(st["name"]), f"{st['rows_in']:,}", f"{st['rows_out']:,}",
                   ", ".join(f"{_esc(r)}: {n:,}" for r, n in st["rejected"].items()) or "-"]
                  for st in manifest["stages"]]
    t = manifest["totals"]
    images = "\n".join(f'<figure><img alt="{_esc(c)}" src="data:image/png;base64,{b}">'
                       f"<figcaption>{_esc(c)}</figcaption></figure>" for c, b in plots(out_dir, manifest, rows.kept))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Thresher report: {_esc(manifest['name'])}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}}
td{{text-align:right}}td:first-child{{text-align:left}}table.examples td{{text-align:left;max-width:40em}}
.alarms{{border:2px solid #c00;background:#fee;padding:.2em 1em}}img{{max-width:100%}}
figure{{margin:1em 0}}figcaption{{color:#444}}</style></head><body>
<h1>Thresher report: {_esc(manifest['name'])}</h1>
{alarm_html}
<p>{t['rows_in']:,} rows in = {t['rows_out']:,} out + {t['rejected_total']:,} rejected;
{manifest['timing']['wall_seconds']:.1f} s; config {_esc(manifest['config_hash'])}.</p>
<h2 id="stages">Stages</h2>
{_table(["stage", "in", "out", "rejected"], stage_rows, "stages")}
{_domains_section(losses)}
{_reject_examples(rows)}
{_score_examples(rows, manifest)}
{_cluster_section(rows, manifest)}
{_mixture_section(out_dir)}
{_ablation_section(out_dir)}
<h2 id="plots">Plots</h2>
{images}
<h2 id="manifest">Manifest</h2><details><summary>manifest.json</summary><pre>{_esc(json.dumps(manifest, indent=2))}</pre></details>
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
