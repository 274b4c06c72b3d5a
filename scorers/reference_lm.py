"""A reference causal LM: train a small one on a corpus sample, and score documents with any.

Scoring: each document is [bos] + its tokens, cut into windows of the model's context length
that overlap by one token, so every token is predicted exactly once with as much context as
the window allows. Windows of a whole batch of documents are sorted by length and packed into
batches under a token budget (little padding), run under `torch.inference_mode`, bf16 + SDPA on
a GPU, fp32 on a CPU. Per document: summed NLL (nats), predicted tokens and UTF-8 bytes, from
which `ref_ppl` = exp(NLL / tokens) and `ref_bpb` = NLL / ln 2 / bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Beside a model that `train_reference` made: the ids of its training documents (D_ref), which
# ref_perplexity drops instead of scoring.
REFERENCE_IDS = "reference_ids.parquet"


@dataclass
class Scores:
    nll: np.ndarray  # summed negative log-likelihood per document, nats
    tokens: np.ndarray  # predicted tokens per document
    bytes: np.ndarray  # UTF-8 bytes per document

    @property
    def ppl(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.tokens > 0, np.exp(self.nll / np.maximum(self.tokens, 1)), np.nan)

    @property
    def bpb(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.bytes > 0, self.nll / math.log(2) / np.maximum(self.bytes, 1), np.nan)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_reference(path: str | Path, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer, device) from a local folder or a GGUF file: bf16 + SDPA on a GPU, fp32 on a CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from thresher.scorers.tokenizer import load_tokenizer

    folder = Path(path).expanduser()
    if folder.is_file() and folder.suffix == ".gguf":
        folder = gguf_as_folder(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"reference model {path!r}: no config.json there; give the local folder of a "
                                "saved Hugging Face causal LM (e.g. from `thresher train-reference`) or a .gguf file")
    device = pick_device(device)
    torch_dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                   "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype, attn_implementation="sdpa",
                                                 local_files_only=True)
    _fuse_tanh_gelu(model)
    model.to(device).eval()
    return model, load_tokenizer(str(folder)), device


def gguf_as_folder(path: str | Path, cache: str | Path | None = None) -> Path:
    """A GGUF model (weights and its own tokenizer) as a Hugging Face folder, dequantised to fp32
    once and cached by content hash under $THRESHER_CACHE (default ~/.cache/thresher): transformers
    dequantises a GGUF file on every load (~15 s for 135M parameters) and cannot save that model as it
    is, so its weights are copied into a plain model of the same config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(path)
    digest = hashlib.blake2b(digest_size=8)
    with open(src, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    # Thresher's cache folder (pipeline/core/cache.py; scorers import no pipeline code).
    root = Path(cache or os.environ.get("THRESHER_CACHE") or Path.home() / ".cache" / "thresher") / "gguf"
    out = root / f"{src.stem}-{digest.hexdigest()}"
    if (out / "config.json").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config), dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(out)  # atomic: a worker converting the same file at the same time keeps its own copy
        except OSError:
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fuse_tanh_gelu(model) -> None:
    """GPT-2's `gelu_new` is the tanh GELU written as seven element-wise ops; torch's fused kernel
    computes the same function (equal within float rounding) in one pass, ~8% of scoring time on a CPU."""
    import torch
    from transformers.activations import NewGELUActivation

    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, torch.nn.GELU(approximate="tanh"))


def context_length(model) -> int:
    cfg = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return 1024


def _bos_id(tokenizer) -> int:
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start documents with")


def windows(token_ids: list[list[int]], bos: int, ctx: int) -> list[tuple[int, list[int]]]:
    """(document index, window) pairs: [bos]+tokens in windows of <= ctx overlapping by one token."""
    out = []
    for d, ids in enumerate(token_ids):
        seq = [bos] + list(ids)
        if len(seq) < 2:
            continue
        step = ctx - 1
        for start in range(0, len(seq) - 1, step):
            out.append((d, seq[start:start + ctx]))
    return out


def _window_nll(model, x, mask):
    """Summed NLL and predicted-token count per row. Logits are computed only at real (not padded)
    positions and in chunks, never as one [batch, length, vocab] tensor."""
    import torch
    import torch.nn.functional as F

    chunk = 256 if x.device.type == "cpu" else 8192  # logits chunk: cache-sized on a CPU
    # Without padding no mask is passed, so attention takes its causal path (half the blocks).
    hidden = model.base_model(input_ids=x, attention_mask=None if bool(mask.all()) else mask,
                              use_cache=False).last_hidden_state[:, :-1]
    valid = mask[:, 1:].bool()
    h, target = hidden[valid], x[:, 1:][valid]
    row = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(valid)[valid]
    head = model.get_output_embeddings()
    losses = torch.empty(len(target), dtype=torch.float32, device=x.device)
    for a in range(0, len(target), chunk):
        logits = head(h[a:a + chunk]).float()
        losses[a:a + chunk] = F.cross_entropy(logits, target[a:a + chunk], reduction="none")
    per_row = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device).index_add_(0, row, losses.double())
    return per_row.cpu().numpy(), valid.sum(dim=1).cpu().numpy()


def score_texts(model, tokenizer, texts: list[str], device: str, batch_tokens: int | None = None,
                max_length: int | None = None) -> Scores:
    """Batches of at most `batch_tokens` (default: 1,024 on a CPU, where bigger batches only spill
    the caches, and 32,768 on a GPU, where they fill it)."""
    import torch

    batch_tokens = batch_tokens or (1024 if device == "cpu" else 32768)
    ctx = min(max_length or context_length(model), context_length(model))
    ids = tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"]
    wins = windows(ids, _bos_id(tokenizer), ctx)
    nll = np.zeros(len(texts), dtype=np.float64)
    ntok = np.zeros(len(texts), dtype=np.int64)
    order = sorted(range(len(wins)), key=lambda i: len(wins[i][1]), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    i = 0
    with torch.inference_mode():
        while i < len(order):
            width = len(wins[order[i]][1])  # longest first: the batch is as wide as its first window
            rows = max(1, batch_tokens // width)
            batch = [wins[j] for j in order[i:i + rows]]
            i += rows
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, w) in enumerate(batch):
                x[r, :len(w)] = torch.tensor(w)
                mask[r, :len(w)] = 1
            x, mask = x.to(device), mask.to(device)
            loss, counts = _window_nll(model, x, mask)
            for r, (d, _) in enumerate(batch):
                nll[d] += loss[r]
                ntok[d] += counts[r]
    nbytes = np.array([len((t or "").encode("utf-8")) for t in texts], dtype=np.int64)
    return Scores(nll, ntok, nbytes)


# --- training ------------------------------------------------------------------------------

SIZES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, n_positions=256),
    "small": dict(n_layer=6, n_head=6, n_embd=384, n_positions=512),
    "125m": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024),
}


def train_reference(texts: list[str], out_dir: str | Path, size: str = "tiny", vocab_size: int = 4096,
                    steps: int = 200, seq_len: int | None = None, batch_size: int = 16, lr: float = 3e-3,
                    seed: int = 0, device: str = "auto", log=print,
                    snapshots: dict[int, str | Path] | None = None) -> dict:
    """Train a byte-level BPE tokenizer and a GPT-2 style model on `texts`; save both to out_dir.
    `snapshots` {step: folder}: also save the model (with the tokenizer) after those steps, i.e.
    the same model at shorter training lengths."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from thresher.scorers.lm_train import TrainStep
    from thresher.scorers.tokenizer import pack, train_bpe_tokenizer

    torch.manual_seed(seed)
    out = Path(out_dir)
    tok = train_bpe_tokenizer(texts, vocab_size, out)
    dims = SIZES[size]
    seq_len = min(seq_len or dims["n_positions"], dims["n_positions"])
    config = GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **dims)
    model = GPT2LMHeadModel(config)
    device = pick_device(device)
    model.to(device).train()
    # One stream of documents separated by EOS, cut into training sequences.
    stream, _ = pack(tok([t for t in texts if t], add_special_tokens=False)["input_ids"], tok.eos_token_id)
    n_seq = len(stream) // seq_len
    if n_seq < 1:
        raise ValueError(f"the reference sample has {len(stream)} tokens, fewer than one sequence of {seq_len}")
    data = torch.from_numpy(stream[: n_seq * seq_len]).view(n_seq, seq_len)
    train = TrainStep(model, lr, warmup_cosine_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        idx = torch.randint(0, n_seq, (min(batch_size, n_seq),), generator=gen)
        losses.append(train.step(data[idx].to(device)))
        if snapshots and step + 1 in snapshots:
            model.save_pretrained(str(snapshots[step + 1]))
            tok.save_pretrained(str(snapshots[step + 1]))
        if log and (step % max(1, steps // 10) == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps} loss {losses[-1]:.3f}")
    model.save_pretrained(str(out))
    return {"size": size, "parameters": sum(p.numel() for p in model.parameters()), "train_tokens": len(stream),
            "steps": steps, "seq_len": seq_len, "final_loss": float(np.mean(losses[-10:])),
            "seconds": time.perf_counter() - t0}


def train_reference_split(ids: list[str], texts: list[str], out_dir: str | Path, fraction: float, seed: int,
                          about: dict | None = None, **train) -> dict:
    """Train the reference model on the reference split D_ref (the documents `ids`/`texts`, drawn
    as the seeded `fraction` of the corpus) and save the split's ids beside the model, so that
    ref_perplexity never scores a document the model learnt. `about` goes into train_info.json."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    info = train_reference(texts, out, seed=seed, **train)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), out / REFERENCE_IDS)
    info = {**info, "fraction": fraction, "seed": seed, "documents": len(ids), **(about or {})}
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    return info
