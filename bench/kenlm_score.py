"""KenLM document scoring throughput: ours (batch normalisation on Arrow) vs cc_net's own scoring.

    .venv/bin/python bench/kenlm_score.py [--repeat 3]

Both score the same documents with the same 5-gram model (trained here with lmplz on part of the
demo corpus) and must give the same perplexities. The peer is cc_net's DocLM loop: each line of a
document normalised by cc_net's own `text_normalizer.normalize` (fetched by `make setup` into
.venv/references), scored with kenlm.Model.score, its length len(line.split()) + 1.
Writes bench/results/kenlm.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import demo_texts, machine, write_result  # noqa: E402


def cc_net_normalizer():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / ".venv" / "references" / "cc_net" / "text_normalizer.py"
    if not path.exists():
        sys.exit(f"{path} is missing: run `make setup` (tools/fetch_references.sh fetches it)")
    spec = importlib.util.spec_from_file_location("text_normalizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.normalize


def ccnet_doclm(model, texts: list[str]) -> np.ndarray:
    """cc_net/perplexity.py DocLM.do, unrounded."""
    normalize = cc_net_normalizer()
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        if not text:
            continue
        logp, length = 0.0, 0
        for line in text.split("\n"):
            line = normalize(line)
            logp += model.score(line)
            length += len(line.split()) + 1
        out[i] = 10.0 ** (-logp / length)
    return out


def ours(model, texts: list[str], batch_rows: int) -> np.ndarray:
    from thresher.scorers.kenlm_model import document_perplexity

    return np.concatenate([document_perplexity(model, pa.array(texts[a:a + batch_rows]))
                           for a in range(0, len(texts), batch_rows)])


def best_of(repeat: int, fn) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    import kenlm

    from thresher.scorers.kenlm_model import train_kenlm

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-rows", type=int, default=2048, help="rows per batch, as the pipeline's batch_rows")
    args = ap.parse_args()
    texts = demo_texts()
    train, docs = texts[::4], [t for i, t in enumerate(texts) if i % 4]
    with tempfile.TemporaryDirectory() as tmp:
        _, binary = train_kenlm(train, Path(tmp) / "model", order=5)
        model = kenlm.Model(str(binary))
        t_ours, p_ours = best_of(args.repeat, lambda: ours(model, docs, args.batch_rows))
        t_peer, p_peer = best_of(args.repeat, lambda: ccnet_doclm(model, docs))
    assert np.allclose(p_ours, p_peer, rtol=1e-9, equal_nan=True), "the two scorers disagree"
    mb = sum(len(t.encode("utf-8")) for t in docs) / 1e6
    result = {
        "machine": machine(),
        "inputs": {"docs": len(docs), "mb": mb, "order": 5, "train_docs": len(train), "batch_rows": args.batch_rows,
                   "repeat": args.repeat},
        "mb_per_s": {"ours": mb / t_ours, "ccnet_doclm": mb / t_peer},
        "seconds": {"ours": t_ours, "ccnet_doclm": t_peer},
        "speedup_vs_ccnet_doclm": t_peer / t_ours,
        "max_relative_difference": float(np.nanmax(np.abs(p_ours / p_peer - 1))),
    }
    path = write_result("kenlm.json", result)
    print(f"ours {result['mb_per_s']['ours']:.1f} MB/s, cc_net DocLM {result['mb_per_s']['ccnet_doclm']:.1f} MB/s: "
          f"{result['speedup_vs_ccnet_doclm']:.1f}x in one process ({len(docs):,} documents, {mb:.1f} MB)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
