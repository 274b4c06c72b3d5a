"""Read a weighted mixture for training: rows drawn with probability proportional to `weight`.

Deterministic per seed and resumable: draws come in blocks of `block` steps, block b from its own
generator seeded with (seed, b), so a loop restarted at step k draws exactly what it would have.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

try:  # a torch IterableDataset when torch is there, a plain iterable otherwise
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover
    _Base = object


class WeightedMixtureSampler(_Base):
    def __init__(self, data_dir: str | Path, seed: int = 0, start_step: int = 0, num_steps: int | None = None,
                 columns: tuple[str, ...] = ("id", "text", "group"), block: int = 4096):
        self.files = sorted(Path(data_dir).glob("*.parquet"))
        if not self.files:
            raise FileNotFoundError(f"{data_dir}: no Parquet shards (give the data/ folder of a thresher output)")
        self.seed, self.start_step, self.num_steps = seed, start_step, num_steps
        self.columns, self.block = columns, block
        weights = [pq.read_table(f, columns=["weight"])["weight"].to_numpy() for f in self.files]
        self.file_start = np.cumsum([0] + [len(w) for w in weights])  # global index of each file's row 0
        w = np.concatenate(weights).astype(np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"{data_dir}: weights must be non-negative with a positive sum")
        self.cdf = np.cumsum(w / w.sum())

    def indices(self, start: int, count: int) -> np.ndarray:
        """Global row indices drawn at steps start .. start+count-1."""
        out = []
        step = start
        while step < start + count:
            b = step // self.block
            rng = np.random.default_rng([self.seed, b])
            draws = np.searchsorted(self.cdf, rng.random(self.block), side="right")
            lo = step - b * self.block
            hi = min(self.block, lo + (start + count - step))
            out.append(np.minimum(draws[lo:hi], len(self.cdf) - 1))
            step += hi - lo
        return np.concatenate(out) if out else np.empty(0, np.int64)

    @lru_cache(maxsize=8)
    def _shard(self, k: int):
        return pq.read_table(self.files[k], columns=list(self.columns))

    def __iter__(self) -> Iterator[dict]:
        step = self.start_step
        end = None if self.num_steps is None else self.start_step + self.num_steps
        while end is None or step < end:
            n = self.block if end is None else min(self.block, end - step)
            for i in self.indices(step, n).tolist():
                k = int(np.searchsorted(self.file_start, i, side="right")) - 1
                table = self._shard(k)
                yield {c: table[c][i - int(self.file_start[k])].as_py() for c in self.columns} | {"step": step}
                step += 1
