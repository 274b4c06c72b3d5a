"""`thresher ablate`: does curation help? The same small proxy LM, from the same seeds, with the same
tokenizer, size and token budget, trained on the pipeline's weighted output (drawn through the
weighted sampler) and on a baseline (the raw inputs, or another pipeline's output), then evaluated
on held-out text per domain that no arm trains on: the YAML's `eval:` files, or by default a
deterministic id-hash split of the inputs. Each seed's result is saved as it finishes, so an
interrupted ablation resumes; ablation.json holds the means, standard deviations and the paired
differences over seeds (DCLM-style evaluation loop; Data-Juicer's sandbox)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from thresher.pipeline.commands.sampler import WeightedMixtureSampler
from thresher.pipeline.core import schema
from thresher.pipeline.engine.config import PipelineConfig, load_config

EVAL_SALT = 0xAB1A7E  # the eval split's hash seed, apart from every sampling seed of the pipeline
EVAL_DOCS_PER_DOMAIN = 200


def input_rows(out_dir: Path) -> pa.Table:
    """Every input row of a finished run (id, text, domain): its output plus its rejected rows."""
    files = sorted((out_dir / "data").glob("*.parquet")) + sorted((out_dir / "rejected").glob("*/*.parquet"))
    if not (out_dir / "rejected").is_dir():
        raise ValueError(f"{out_dir}: no rejected/ folder; ablate needs output.write_rejected: true to see "
                         "every input row")
    cols = [schema.ID, schema.TEXT, schema.DOMAIN]
    tables = [ds.dataset(str(f), format="parquet").to_table(columns=cols) for f in files]
    table = pa.concat_tables([t.cast(pa.schema([pa.field(c, pa.string()) for c in cols])) for t in tables])
    return table.filter(pc.fill_null(pc.greater(pc.utf8_length(table[schema.TEXT]), 0), False))


def eval_split(rows: pa.Table, fraction: float) -> tuple[dict[str, list[str]], set[str]]:
    """(held-out texts per domain, their ids): the rows whose id hash falls in the lowest
    `fraction`, at most EVAL_DOCS_PER_DOMAIN per domain."""
    from thresher.scorers.sampling import sample_mask

    held = rows.filter(pa.array(sample_mask(rows[schema.ID], fraction, EVAL_SALT)))
    texts: dict[str, list[str]] = {}
    for r in held.to_pylist():
        domain = r[schema.DOMAIN] or "(none)"
        if len(texts.setdefault(domain, [])) < EVAL_DOCS_PER_DOMAIN:
            texts[domain].append(r[schema.TEXT])
    return texts, set(held[schema.ID].to_pylist())


def yaml_eval(config: PipelineConfig) -> dict[str, list[str]]:
    from thresher.pipeline.core.files import file_texts

    return {domain: list(file_texts([config.resolve(p) for p in paths])) for domain, paths in config.eval.items()}


def weighted_stream(data_dir: Path, held_out: set[str], seed: int) -> Iterator[str]:
    """Documents of a weighted output drawn in proportion to their weight, held-out ids skipped."""
    for row in WeightedMixtureSampler(data_dir, seed=seed, columns=(schema.ID, schema.TEXT)):
        if row[schema.ID] not in held_out and row[schema.TEXT]:
            yield row[schema.TEXT]


def uniform_stream(texts: list[str], seed: int) -> Iterator[str]:
    """The raw baseline: every input document equally likely, drawn with replacement."""
    rng = np.random.default_rng([seed, 7])
    while True:
        for i in rng.integers(0, len(texts), 4096).tolist():
            yield texts[i]


def _stats(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def summarize(per_seed: list[dict]) -> dict:
    """Means and standard deviations per arm and domain, and the paired difference baseline -
    curated in bits per byte (positive: curation helped) with a paired t-test over seeds."""
    from scipy import stats

    arms = ("curated", "baseline")
    domains = sorted(per_seed[0]["curated"]["final"])
    final = {a: {d: [s[a]["final"][d] for s in per_seed] for d in domains} for a in arms}
    for a in arms:
        final[a]["mean over domains"] = [{"loss": float(np.mean([s[a]["final"][d]["loss"] for d in domains])),
                                          "bpb": float(np.mean([s[a]["final"][d]["bpb"] for d in domains]))}
                                         for s in per_seed]
    table = {a: {d: {m: _stats([v[m] for v in vals]) for m in ("loss", "bpb")} for d, vals in final[a].items()}
             for a in arms}
    difference = {}
    for d in final["curated"]:
        diff = [b["bpb"] - c["bpb"] for b, c in zip(final["baseline"][d], final["curated"][d])]
        entry = {"bpb": _stats(diff), "per_seed": diff}
        if len(diff) > 1 and np.std(diff) > 0:
            t = stats.ttest_rel([b["bpb"] for b in final["baseline"][d]], [c["bpb"] for c in final["curated"][d]])
            entry.update(t=float(t.statistic), p=float(t.pvalue))
        difference[d] = entry
    overall = difference["mean over domains"]
    d, n = overall["bpb"]["mean"], len(per_seed)
    better = "lower" if d > 0 else "higher"
    sig = (f"paired over {n} seeds: t = {overall['t']:.2f}, p = {overall['p']:.3f}"
           + (", significant at 0.05" if overall["p"] < 0.05 else ", not significant at 0.05")) if "t" in overall \
        else f"{n} seed(s): no test"
    statement = (f"Mean over eval domains, the model trained on the curated data has {abs(d):.4f} bits per byte "
                 f"{better} than the baseline ({sig}).")
    return {"arms": table, "difference_baseline_minus_curated": difference, "statement": statement}


def plot_curves(per_seed: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    from thresher.pipeline.commands.report import curves_figure

    fig = curves_figure({arm: [s[arm]["curve"] for s in per_seed] for arm in ("curated", "baseline")})
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def ablate(pipeline: Path, out: Path, baseline: str = "raw", tokens: int = 200_000, seeds: int = 3,
           eval_fraction: float = 0.05, size: str = "tiny", seq_len: int = 128, batch_size: int = 16,
           lr: float = 3e-3, vocab_size: int = 4096, device: str = "auto", executor: str | None = None,
           address: str | None = None, progress=None, log=print) -> dict:
    """Run the pipeline (and a baseline pipeline) into out/, train both arms per seed, write
    out/ablation.json and out/curves.png, and copy ablation.json into the curated output."""
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner
    from thresher.scorers.ablation_lm import train_arm
    from thresher.scorers.reference_lm import SIZES, pick_device
    from thresher.scorers.tokenizer import load_tokenizer, train_bpe_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(False)

    def run(path: Path, name: str) -> tuple[PipelineConfig, Path]:
        cfg = load_config(path)
        cfg = cfg.with_overrides(**({"executor": executor} if executor else {}),
                                 **({"ray": {"address": address}} if address else {}))
        log(f"[ablate] running {path} ({name} arm)")
        result = Runner(cfg, progress=progress, output_dir=out / name).run()
        return cfg, Path(result.output_dir)

    cfg, curated_dir = run(pipeline, "curated")
    rows = input_rows(curated_dir)
    if cfg.eval:
        eval_texts, held_out = yaml_eval(cfg), set()
    else:
        eval_texts, held_out = eval_split(rows, eval_fraction)
    if not eval_texts:
        raise ValueError("no evaluation text: add an `eval:` section (files per domain) or raise --eval-fraction")
    baseline_dir = None if baseline == "raw" else run(Path(baseline), "baseline")[1]
    raw = [t for i, t in zip(rows[schema.ID].to_pylist(), rows[schema.TEXT].to_pylist()) if i not in held_out]
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        sample = [raw[i] for i in np.random.default_rng(0).permutation(len(raw))[:5000]]
        train_bpe_tokenizer(sample, vocab_size, tok_dir)
    tok = load_tokenizer(str(tok_dir))
    device = pick_device(device)
    dims = {k: v for k, v in SIZES[size].items() if k != "n_positions"}
    settings = {"tokens": tokens, "size": size, "seq_len": seq_len, "batch_size": batch_size, "lr": lr,
                "vocab_size": len(tok), "baseline": baseline, "eval_fraction": None if cfg.eval else eval_fraction}
    per_seed = []
    for seed in range(seeds):
        path = out / "seeds" / f"seed-{seed}.json"
        if path.exists() and json.loads(path.read_text()).get("settings") == settings:
            log(f"[ablate] seed {seed}: reused {path}")
            per_seed.append(json.loads(path.read_text()))
            continue
        record = {"seed": seed, "settings": settings}
        streams = {"curated": weighted_stream(curated_dir / "data", held_out, seed),
                   "baseline": uniform_stream(raw, seed) if baseline_dir is None
                   else weighted_stream(baseline_dir / "data", held_out, seed)}
        for arm, stream in streams.items():
            log(f"[ablate] seed {seed}: training the {arm} arm on {tokens:,} tokens")
            record[arm] = train_arm(stream, tok, eval_texts, tokens, seed, dims, seq_len, batch_size, lr, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        per_seed.append(record)
    result = {"pipeline": str(pipeline), "settings": settings, "device": device, "seeds": seeds,
              "eval": {"source": "yaml" if cfg.eval else "id-hash split of the inputs",
                       "documents": {d: len(v) for d, v in eval_texts.items()}},
              **summarize(per_seed),
              "curves": {arm: [s[arm]["curve"] for s in per_seed] for arm in ("curated", "baseline")},
              "seconds": {arm: sum(s[arm]["seconds"] for s in per_seed) for arm in ("curated", "baseline")}}
    plot_curves(per_seed, out / "curves.png")
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    shutil.copy(out / "ablation.json", curated_dir / "ablation.json")  # `thresher report` shows it
    log(result["statement"])
    return result
