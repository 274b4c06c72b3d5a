"""One arm of an ablation: a fresh small causal LM trained on a stream of documents up to a token
budget, evaluated on held-out text per domain (loss per token and bits per byte) along the way.
Both arms of `thresher ablate` run this with the same seed, tokenizer, model size and budget, so
the only difference between them is the data."""

from __future__ import annotations

import math
import time
from typing import Iterator

import numpy as np


def _sequences(docs: Iterator[str], tokenizer, seq_len: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """Documents tokenized in chunks, joined with EOS, cut into sequences of seq_len tokens."""
    from thresher.scorers.tokenizer import pack

    buf = np.zeros(0, dtype=np.int64)
    while True:
        texts = [t for _, t in zip(range(chunk), docs) if t]
        if not texts:
            return
        stream, _ = pack(tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)
        buf = np.concatenate([buf, stream])
        n = len(buf) // seq_len
        for i in range(n):
            yield buf[i * seq_len:(i + 1) * seq_len]
        buf = buf[n * seq_len:]


def evaluate(model, tokenizer, eval_texts: dict[str, list[str]], device: str, seq_len: int) -> dict[str, dict]:
    """Per domain: mean loss per token (nats) and bits per byte over its held-out documents."""
    from thresher.scorers.reference_lm import score_texts

    was_training = model.training
    model.eval()
    out = {}
    for domain, texts in sorted(eval_texts.items()):
        s = score_texts(model, tokenizer, texts, device, max_length=seq_len)
        out[domain] = {"loss": float(s.nll.sum() / max(s.tokens.sum(), 1)),
                       "bpb": float(s.nll.sum() / math.log(2) / max(s.bytes.sum(), 1))}
    model.train(was_training)
    return out


def train_arm(docs: Iterator[str], tokenizer, eval_texts: dict[str, list[str]], tokens: int, seed: int,
              size: dict, seq_len: int = 128, batch_size: int = 16, lr: float = 3e-3, device: str = "cpu",
              evals: int = 5) -> dict:
    """Train from `seed` on the document stream `docs` (endless: a sampler) for tokens //
    (batch_size x seq_len) steps; evaluate `evals` times along the way, the last at the end."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from thresher.scorers.lm_train import TrainStep

    steps = max(1, tokens // (batch_size * seq_len))
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **size)
    model = GPT2LMHeadModel(config).to(device).train()
    train = TrainStep(model, lr, warmup_cosine_steps=steps)

    seqs = _sequences(docs, tokenizer, seq_len)
    marks = set(np.linspace(0, steps, evals + 1, dtype=int)[1:].tolist())
    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        try:
            batch = torch.from_numpy(np.stack([next(seqs) for _ in range(batch_size)])).to(device)
        except StopIteration:
            raise ValueError("an ablation arm ran out of training documents") from None
        loss = train.step(batch)
        if step in marks:
            curve.append({"step": step, "tokens": step * batch_size * seq_len, "train_loss": loss,
                          "eval": evaluate(model, tokenizer, eval_texts, device, seq_len)})
    return {"steps": steps, "tokens": steps * batch_size * seq_len, "seconds": time.perf_counter() - t0,
            "final": curve[-1]["eval"], "curve": curve}
