"""Progress for long work: shards done, rows/s, and a one-line summary per stage."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, enabled: bool = True, stream=sys.stderr):
        self.enabled = enabled
        self.stream = stream

    def log(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=self.stream)

    def warn(self, message: str) -> None:
        """Something the user must see even with progress off (-q): data left out, repeated ids."""
        tqdm.write(message, file=self.stream)

    def bar(self, desc: str, total: int) -> "_Bar":
        return _Bar(self, desc, total)


class _Bar:
    def __init__(self, progress: Progress, desc: str, total: int):
        self.start = time.perf_counter()
        self.rows = 0
        self._tq = tqdm(total=total, desc=desc, unit="shard", file=progress.stream, dynamic_ncols=True,
                        disable=not progress.enabled, mininterval=0.5, leave=True)

    def update(self, rows: int) -> None:
        self.rows += rows
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self._tq.set_postfix_str(f"{self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s", refresh=False)
        self._tq.update(1)

    def close(self) -> float:
        self._tq.close()
        return time.perf_counter() - self.start
