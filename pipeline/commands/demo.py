"""`thresher demo`: the whole mission on the bundled corpus, with every model it needs made first.

    DIR/models/ref/            reference LM (BPE + small GPT) trained on a seeded 5% of the corpus
    DIR/models/ref-step<N>/    the same training run saved after N steps: models of different
                               training length, the rows of the bits-per-byte matrix
    DIR/models/harm.bin        KenLM 3-gram trained on the bundled harmful-text sample only
    DIR/models/bpb.parquet     bits per byte of each model on each domain (`thresher bpb-matrix`)
    DIR/models/benchmark.csv   each model's "error": its bits per byte (/ 8) on held-out documents of a
                               target domain, measured here (no invented numbers)
    DIR/full.yaml              configs/full.yaml with these paths filled in
    DIR/out/                   the weighted output, manifest, mixture.json, report.html
    DIR/shards/                tokenized training shards (`thresher export`)

Each model is made once (its last file marks it done) and the pipeline resumes from its work dir,
so a rerun reuses everything already made.
"""

from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path

import pyarrow as pa
import yaml

from thresher.pipeline.engine.config import parse_config

SNAPSHOTS = (25, 50, 100, 200)  # training lengths of the bpb-matrix models; the last is `ref`
TARGET_DOMAIN = "python-docs"  # the benchmark: held-out bits per byte on this domain
PAGES = 40  # pages per domain in the bpb matrix
_CODE_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The bundled corpus: package data when installed from a wheel, tests/data/demo in a checkout."""
    try:
        found = Path(str(resources.files("thresher.demo_data")))
        if (found / "SOURCES.md").exists():
            return found
    except (ModuleNotFoundError, TypeError):
        pass
    return _CODE_ROOT / "tests" / "data" / "demo"


def full_config_text() -> str:
    return resources.files("thresher.configs").joinpath("full.yaml").read_text(encoding="utf-8")


def _corpus(data: Path) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts, domains) of the bundled corpus files, in file order."""
    from thresher.pipeline.core.files import json_records

    rows = [row for f in sorted(data.glob("*.jsonl.gz")) for _, row in json_records(f)]
    return [r["doc_id"] for r in rows], [r["text"] for r in rows], [r["domain"] for r in rows]


def prepare_models(models: Path, data: Path, log) -> dict[str, Path]:
    """The models the full pipeline names, each made only if it is not there yet."""
    from thresher.pipeline.core.files import file_texts, write_parquet
    from thresher.scorers.bpb_matrix import bpb_matrix
    from thresher.scorers.domain_sample import merge_samples, sample_part
    from thresher.scorers.kenlm_model import train_kenlm
    from thresher.scorers.reference_lm import train_reference_split
    from thresher.scorers.sampling import sample_mask

    models.mkdir(parents=True, exist_ok=True)
    ids, texts, domains = _corpus(data)
    in_ref = sample_mask(pa.array(ids), 0.05, 0)  # the reference split D_ref, as train-reference draws it
    ref = models / "ref"
    snapshots = {s: models / f"ref-step{s}" for s in SNAPSHOTS[:-1]}
    if not (ref / "train_info.json").exists():
        sample = [t for t, k in zip(texts, in_ref) if k]
        log(f"[demo] training the reference LM on {len(sample):,} documents (a seeded 5%) ...")
        train_reference_split([i for i, k in zip(ids, in_ref) if k], sample, ref, 0.05, 0, size="tiny",
                              vocab_size=2048, steps=SNAPSHOTS[-1], seq_len=128, batch_size=16, log=None,
                              snapshots=snapshots)
    harm = models / "harm"
    if not harm.with_suffix(".bin").exists():
        log("[demo] training the harmful-text KenLM on the bundled harmful sample ...")
        train_kenlm(file_texts([data / "harmful" / "train.jsonl.gz"]), harm, order=3)
    matrix, benchmark = models / "bpb.parquet", models / "benchmark.csv"
    if not benchmark.exists():
        log("[demo] bits per byte of the reference models per domain, and on the held-out target domain ...")
        trained = [ref, *snapshots.values()]
        rest = [i for i, used in enumerate(in_ref) if not used]  # never the models' own training documents
        column = lambda values: pa.array([values[i] for i in rest], pa.string())  # noqa: E731
        part = sample_part(column(domains), column(ids), column(texts), PAGES)  # as `thresher bpb-matrix`
        pages = {d: v["texts"] for d, v in merge_samples([part], PAGES).items()}
        page_set = {t for v in pages.values() for t in v}
        held_out = sample_mask(pa.array(ids), 0.2, 1)
        target = [texts[i] for i in rest if domains[i] == TARGET_DOMAIN and held_out[i] and texts[i] not in page_set]
        write_parquet(bpb_matrix(trained, pages, max_length=128), matrix)
        errors = bpb_matrix(trained, {"target": target[:PAGES]}, max_length=128)
        with open(benchmark, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["model", "error"])
            # bits per byte / 8 (the bits of a raw byte): an error in [0, 1], as the estimators expect
            w.writerows((m, e / 8) for m, e in zip(errors["model"].to_pylist(), errors["target"].to_pylist()))
    return {"ref": ref, "harm": harm.with_suffix(".bin"), "matrix": matrix, "benchmark": benchmark}


def pipeline_yaml(out: Path, data: Path, models: dict[str, Path]) -> dict:
    """configs/full.yaml with the bundled corpus, the prepared models and DIR's folders filled in."""
    cfg = yaml.safe_load(full_config_text())
    cfg["inputs"][0]["paths"] = [str(data / "*.jsonl.gz")]
    cfg["inputs"][1]["paths"] = [str(data / "harmful" / "mixed_in.jsonl.gz")]
    paths = {("harmful_filter", "model"): models["harm"],
             ("harmful_filter", "validation"): data / "harmful" / "validation.jsonl.gz",
             ("ref_perplexity", "model"): models["ref"],
             ("ppl_correlation", "matrix"): models["matrix"], ("ppl_correlation", "benchmark"): models["benchmark"]}
    for stage in cfg["stages"]:
        for (name, key), path in paths.items():
            if stage["stage"] == name and key in stage:
                stage[key] = str(path)
    cfg["output"]["dir"], cfg["work_dir"] = str(out / "out"), str(out / "work")
    return cfg


def run_demo(out: Path, log, executor: str | None = None) -> dict:
    """Prepares the models, runs the full pipeline, writes the report and the training shards."""
    from thresher.pipeline.commands.export import export
    from thresher.pipeline.commands.report import render
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

    out = Path(os.path.abspath(out))
    data = data_dir()
    models = prepare_models(out / "models", data, log)
    cfg_data = pipeline_yaml(out, data, models)
    if executor:
        cfg_data["executor"] = executor
    (out / "full.yaml").write_text(yaml.safe_dump(cfg_data, sort_keys=False))
    cfg = parse_config(cfg_data, str(out / "full.yaml"), base_dir=out)
    result = Runner(cfg, progress=Progress(enabled=True)).run()
    report = render(result.output_dir)
    shards = out / "shards"
    exported = export(result.output_dir, str(models["ref"]), shards, seq_len=128)
    mixture = json.loads((result.output_dir / "mixture.json").read_text())
    return {"manifest": result.manifest, "mixture": mixture, "report": report, "shards": shards,
            "exported": exported, "models": out / "models", "output": result.output_dir,
            "pipeline": out / "full.yaml"}


def describe(res: dict) -> str:
    """What the demo did and where to look, for the terminal."""
    mix = res["mixture"]
    lines = ["", "Mixture (Aioli vs stratified):"]
    for g, a, s in zip(mix["groups"], mix["proportions"], mix["initial_proportions"]):
        lines.append(f"  {g:<14} aioli {a:6.3f}   stratified {s:6.3f}")
    lines += ["", "Where to look:",
              f"  weighted output   {res['output'] / 'data'}",
              f"  manifest          {res['output'] / 'manifest.json'}",
              f"  mixture           {res['output'] / 'mixture.json'}",
              f"  report            {res['report']}",
              f"  training shards   {res['shards']} ({res['exported']['tokens']:,} tokens)",
              f"  models            {res['models']}",
              f"  pipeline          {res['pipeline']}  (thresher run it again after editing)"]
    return "\n".join(lines)
