"""Aioli online data mixing (Chen et al. 2024): estimate the mixing-law matrix A while training.

Linear dynamic mixing law: one step on mixture q lowers group i's validation loss by about
sum_j A[i, j] q[j]. Every round of `round_steps` steps begins with a learning phase: `sweeps` x m
chunks of `chunk_steps` steps, chunk j of a sweep training on q_j (share `focus` on group j, the
rest spread evenly), each chunk bracketed by validation losses. The drops B[i, j] (averaged
over sweeps) satisfy B[i] = Q A[i] with Q the matrix whose rows are the q_j, so A[i] = Q^-1 B[i].
A is normalised (by its largest absolute entry), then the proportions take an exponentiated-
gradient step p <- p * exp(eta * sum_i A[i, :]) (or an EMA of it), and the rest of the round
trains on p.

Use from any training loop:

    mixer = AioliMixer(["code", "prose", "math"])
    for step in range(total_steps):
        if mixer.wants_losses(step):
            mixer.observe(step, validation_loss_per_group(model))   # list/array, one per group
        batch = sample_batch(mixer.proportions(step))                # share of the batch per group
        train_step(model, batch)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AioliMixer:
    groups: list[str]
    sweeps: int = 4  # k
    chunk_steps: int = 4  # s
    focus: float = 0.625  # f
    eta: float = 0.2
    round_steps: int = 250  # U
    ema: float | None = None  # None: exponentiated gradient; else p <- ema * p + (1 - ema) * EG(p)
    initial: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        m = len(self.groups)
        if m < 2:
            raise ValueError("Aioli needs at least two groups")
        if self.sweeps * m * self.chunk_steps >= self.round_steps:
            raise ValueError(f"the learning phase ({self.sweeps} sweeps x {m} groups x {self.chunk_steps} steps) "
                             f"must be shorter than a round ({self.round_steps} steps)")
        if not (1.0 / m <= self.focus < 1.0):
            raise ValueError("focus must be in [1/m, 1)")
        self.p = np.full(m, 1.0 / m) if self.initial is None else np.asarray(self.initial, float) / np.sum(self.initial)
        rest = (1.0 - self.focus) / (m - 1)
        self.Q = np.full((m, m), rest) + np.eye(m) * (self.focus - rest)  # row j = q_j
        self._drops = np.zeros((m, m))
        self._last: np.ndarray | None = None
        self._round = -1

    @property
    def m(self) -> int:
        return len(self.groups)

    @property
    def learn_steps(self) -> int:
        return self.sweeps * self.m * self.chunk_steps

    def _chunk(self, step: int) -> int | None:
        """Index of the learning chunk this step belongs to, or None outside the learning phase."""
        offset = step % self.round_steps
        return offset // self.chunk_steps if offset < self.learn_steps else None

    def proportions(self, step: int) -> np.ndarray:
        c = self._chunk(step)
        return self.Q[c % self.m].copy() if c is not None else self.p.copy()

    def wants_losses(self, step: int) -> bool:
        """True at the boundaries of learning chunks: before the first and after each one."""
        offset = step % self.round_steps
        return offset <= self.learn_steps and offset % self.chunk_steps == 0

    def observe(self, step: int, group_val_losses) -> None:
        losses = np.asarray(group_val_losses, dtype=np.float64)
        if losses.shape != (self.m,):
            raise ValueError(f"expected {self.m} validation losses, one per group, got shape {losses.shape}")
        offset = step % self.round_steps
        if offset == 0:
            self._round = step // self.round_steps
            self._drops[:] = 0.0
        elif self._last is not None:
            j = (offset // self.chunk_steps - 1) % self.m
            self._drops[:, j] += self._last - losses
        self._last = losses
        if offset == self.learn_steps:
            self._update(step)

    def _update(self, step: int) -> None:
        B = self._drops / self.sweeps  # B[i, j]: mean drop of group i when training on q_j
        A = np.linalg.solve(self.Q, B.T).T  # A[i] = Q^-1 B[i]
        scale = np.max(np.abs(A))
        A = A / scale if scale > 0 else A
        eg = self.p * np.exp(self.eta * A.sum(axis=0))
        eg /= eg.sum()
        self.p = eg if self.ema is None else self.ema * self.p + (1 - self.ema) * eg
        self.p /= self.p.sum()
        self.history.append({"round": self._round, "step": step, "A": A.tolist(), "proportions": self.p.tolist()})
