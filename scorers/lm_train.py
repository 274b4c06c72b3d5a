"""The one training step for the small causal LMs Thresher trains itself: the reference model
(reference_lm.train_reference) and the mixture's proxy runs (proxy.proxy_run)."""

from __future__ import annotations

import math


class TrainStep:
    """AdamW on a causal LM with clipped gradients and an optional schedule: `step(batch)` takes
    one batch of token ids (the labels are the ids themselves) and returns its loss."""

    def __init__(self, model, lr: float, weight_decay: float = 0.01, clip: float = 1.0,
                 warmup_cosine_steps: int | None = None):
        """warmup_cosine_steps: over that many steps, a linear warm-up (the first 10%), then
        cosine decay to 10% of `lr`; None keeps `lr` constant."""
        import torch

        self.model, self.clip = model, clip
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = None
        if warmup_cosine_steps:
            steps = warmup_cosine_steps
            warmup = max(1, steps // 10)
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / warmup) * (
                0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup))))))

    def step(self, batch) -> float:
        import torch

        loss = self.model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()
