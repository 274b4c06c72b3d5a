"""A proxy training run over data groups: a small causal LM trained on a mixture that a schedule
(a fixed mix, or an AioliMixer) sets step by step, with per-group validation losses."""

from __future__ import annotations

import math

import numpy as np


class GroupData:
    """Per-group token streams cut into fixed-length sequences: train and validation. A group
    whose texts cannot fill MIN_SEQUENCES sequences is left out and listed in `too_small`."""

    MIN_SEQUENCES = 4  # per group: enough to hold out a validation sequence and still train

    def __init__(self, texts: dict[str, list[str]], tokenizer, seq_len: int, val_fraction: float = 0.1):
        import torch

        from thresher.scorers.tokenizer import pack

        self.groups, self.too_small = [], []
        self.train, self.val = {}, {}
        for g in sorted(texts):
            stream, _ = pack(tokenizer(texts[g], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)
            n = len(stream) // seq_len
            if n < self.MIN_SEQUENCES:
                self.too_small.append(g)
                continue
            self.groups.append(g)
            seqs = torch.from_numpy(stream[: n * seq_len]).view(n, seq_len)
            n_val = max(1, int(math.ceil(n * val_fraction)))
            self.val[g], self.train[g] = seqs[:n_val], seqs[n_val:]


def proxy_run(data: GroupData, schedule, steps: int, batch_size: int = 8, vocab_size: int = 2048,
              size: dict | None = None, lr: float = 3e-3, seed: int = 0, val_batches: int = 4,
              device: str = "auto", cpu_threads: int | None = None) -> dict:
    """Train from scratch; `schedule(step, losses_fn)` returns the mix for the step. Returns the
    final validation loss per group and their mean. `cpu_threads`: torch's threads for the run on
    a CPU (a CPU matmul's sums depend on how many threads split them, so a fixed count gives the
    same run in any process; None: the process's own)."""
    import torch

    before = torch.get_num_threads()
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    try:
        return _train(data, schedule, steps, batch_size, vocab_size, size, lr, seed, val_batches, device)
    finally:
        torch.set_num_threads(before)


def _train(data: GroupData, schedule, steps, batch_size, vocab_size, size, lr, seed, val_batches, device) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    seq_len = next(iter(data.train.values())).shape[1]
    dims = size or dict(n_layer=2, n_head=2, n_embd=64)
    from thresher.scorers.lm_train import TrainStep
    from thresher.scorers.reference_lm import pick_device

    device = pick_device(device)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=seq_len, **dims)).to(device)
    train = TrainStep(model, lr)

    def val_losses() -> np.ndarray:
        model.eval()
        out = []
        with torch.inference_mode():
            for g in data.groups:
                x = data.val[g][: val_batches * batch_size].to(device)
                out.append(model(input_ids=x, labels=x).loss.item())
        model.train()
        return np.array(out)

    for step in range(steps):
        mix = np.asarray(schedule(step, val_losses), dtype=float)
        counts = rng.multinomial(batch_size, mix / mix.sum())
        parts = [data.train[g][rng.integers(0, len(data.train[g]), c)] for g, c in zip(data.groups, counts) if c]
        train.step(torch.cat(parts).to(device))
    final = val_losses()
    return {"val_loss": dict(zip(data.groups, final.tolist())), "mean_val_loss": float(final.mean())}


def aioli_schedule(mixer):
    def schedule(step, val_losses):
        if mixer.wants_losses(step):
            mixer.observe(step, val_losses())
        return mixer.proportions(step)
    return schedule


def fixed_schedule(p):
    p = np.asarray(p, dtype=float)
    return lambda step, val_losses: p
