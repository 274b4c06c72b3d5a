"""Aioli online data mixing (Chen et al. 2024), as HazyResearch/aioli's trainer/aioli_trainer.py does it.

Linear dynamic mixing law: one step on mixture q lowers group i's validation loss by about
sum_j A[i, j] q[j]. Each round of `round_steps` steps starts with LearnParams (aioli_trainer.py
`learn_params_subroutine`): `sweeps` sweeps, each over the m groups in a fresh random order
(`np.random.permutation` per sweep), training `chunk_steps` steps on q_j (share `focus` on group j,
the rest spread evenly) and recording the drop of every group's validation loss. With B[i, j] the
drop per sweep, B[i] = Q A[i] (Q: rows q_j), so A[i] = Q^-1 B[i]. Then (`train`, the dynamic
loop) A is shifted by its minimum when that is negative and divided by its sum
(`aioli_normalize_A`), and the proportions take an exponentiated-gradient step from uniform in
the first round and from the previous proportions after it: p <- p * exp(eta * sum_i A[i, :]).
With `ema`, A is smoothed instead (A_ema <- (1 - ema) A + ema A_ema) and p = exp(eta * sum_i
A_ema[i, :]) from uniform each round. A `prior` mixture trains for `prior_steps` steps first
(the reference's restricted setting); the rounds start from uniform as the reference does.

The static mixture a run yields, `mixture()`, is the mean of the proportions over the last half of
its rounds (tail averaging): each round's A is normalised to unit sum however small the true loss
drops have become, so once they sink toward the noise, the last round's proportions wander; the
tail mean keeps the trend and averages that wander out (tested on simulated mixing laws).

Use from any training loop:

    mixer = AioliMixer(["code", "prose", "math"])
    for step in range(total_steps):
        if mixer.wants_losses(step):
            mixer.observe(step, validation_loss_per_group(model))   # list/array, one per group
        batch = sample_batch(mixer.proportions(step))                # share of the batch per group
        train_step(model, batch)
    static_mixture = mixer.mixture()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AioliMixer:
    groups: list[str]
    sweeps: int = 4  # lp_rounds (the reference recommends 4 or 6)
    chunk_steps: int = 4  # lp_steps (recommended: 4)
    focus: float = 0.625  # one_hot_factor
    eta: float = 0.2
    round_steps: int = 250  # update_steps
    ema: float | None = None  # weight of the previous smoothed A (reference: unset at first)
    prior: np.ndarray | None = None  # aioli_prior, trained on for prior_steps before the first round
    prior_steps: int = 0
    seed: int = 0
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
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise ValueError("ema must be in [0, 1)")
        if self.prior_steps and self.prior is None:
            raise ValueError("prior_steps needs a prior mixture")
        self.p = np.full(m, 1.0 / m)
        self.prior = None if self.prior is None else np.asarray(self.prior, float) / np.sum(self.prior)
        rest = (1.0 - self.focus) / (m - 1)
        self.Q = np.full((m, m), rest) + np.eye(m) * (self.focus - rest)  # row j = q_j
        self._drops = np.zeros((m, m))
        self._last: np.ndarray | None = None
        self._smoothed_A: np.ndarray | None = None
        self._orders: dict[int, np.ndarray] = {}

    @property
    def m(self) -> int:
        return len(self.groups)

    @property
    def learn_steps(self) -> int:
        return self.sweeps * self.m * self.chunk_steps

    def _position(self, step: int) -> tuple[int, int] | None:
        """(round, offset in the round), or None during the prior's steps."""
        s = step - self.prior_steps
        return None if s < 0 else divmod(s, self.round_steps)

    def sweep_order(self, round_: int) -> np.ndarray:
        """The groups' order over the round's learning chunks: a seeded permutation per sweep
        (aioli_trainer.py, learn_params_subroutine: `mixture_order = np.concatenate(
        [np.random.permutation(self.args.k) for i in range(self.args.lp_rounds)])`)."""
        if round_ not in self._orders:
            rng = np.random.default_rng([self.seed, round_])
            self._orders[round_] = np.concatenate([rng.permutation(self.m) for _ in range(self.sweeps)])
        return self._orders[round_]

    def proportions(self, step: int) -> np.ndarray:
        pos = self._position(step)
        if pos is None:
            return self.prior.copy()
        r, offset = pos
        if offset < self.learn_steps:
            return self.Q[self.sweep_order(r)[offset // self.chunk_steps]].copy()
        return self.p.copy()

    def wants_losses(self, step: int) -> bool:
        """True at the boundaries of learning chunks: before the first and after each one."""
        pos = self._position(step)
        return pos is not None and pos[1] <= self.learn_steps and pos[1] % self.chunk_steps == 0

    def observe(self, step: int, group_val_losses) -> None:
        losses = np.asarray(group_val_losses, dtype=np.float64)
        if losses.shape != (self.m,):
            raise ValueError(f"expected {self.m} validation losses, one per group, got shape {losses.shape}")
        pos = self._position(step)
        if pos is None:
            return
        r, offset = pos
        if offset == 0:
            self._drops[:] = 0.0
        elif self._last is not None:
            j = self.sweep_order(r)[offset // self.chunk_steps - 1]
            self._drops[:, j] += self._last - losses
        self._last = losses
        if offset == self.learn_steps:
            self._update(r, step)

    def _update(self, round_: int, step: int) -> None:
        # learn_params_subroutine: `new_graph /= self.args.lp_rounds`, then per row
        # `A[i] = np.linalg.solve(weight_matrix, row)`.
        B = self._drops / self.sweeps  # B[i, j]: drop of group i over a chunk on q_j, per sweep
        A = np.linalg.solve(self.Q, B.T).T  # A[i] = Q^-1 B[i]
        # train, aioli_normalize_A: `if min_entry < 0: graph -= min_entry`, then `graph /= graph.sum()`.
        if A.min() < 0:
            A = A - A.min()
        if A.sum() > 0:
            A = A / A.sum()
        # train: `weights = np.multiply(weights_init, np.exp(eta * graph.sum(axis=0)))` when i == 0
        # (weights_init = ones), `np.multiply(weights, ...)` after; with ema, from weights_init on
        # `ema_graph = (1 - ema) * graph + ema * ema_graph`.
        if self.ema is None:
            start = np.ones(self.m) if round_ == 0 else self.p
            w = start * np.exp(self.eta * A.sum(axis=0))
        else:
            prev = self._smoothed_A
            self._smoothed_A = A if round_ == 0 or prev is None else (1 - self.ema) * A + self.ema * prev
            w = np.exp(self.eta * self._smoothed_A.sum(axis=0))
        self.p = w / w.sum()
        self.history.append({"round": round_, "step": step, "A": A.tolist(), "proportions": self.p.tolist()})

    def mixture(self) -> np.ndarray:
        """The static mixture a run yields: the mean proportions of the last half of its rounds
        (the prior, or uniform, before any round)."""
        if not self.history:
            return self.prior.copy() if self.prior is not None else self.p.copy()
        tail = [h["proportions"] for h in self.history[len(self.history) // 2:]]
        return np.mean(tail, axis=0)
